"""DRF's JSON parser for the JSON APIs (the coordinators'), refusing deep nesting with a 400.

DRF's own catches ValueError only; json.loads raises RecursionError on a body nested about a thousand levels
deep, which would be a 500. (The FHIR edge has its own parser, fhir_bridge/drf.py, with the hub's limits.)
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply") from None
