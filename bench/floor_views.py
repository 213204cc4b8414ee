"""The floor's one view: parse the body as a FHIR R4B Bundle with fhir.resources, store it as one JSONB row in
one transaction, answer 201. What any Django intake of a Bundle costs at least."""

from django.db import connection, transaction
from django.http import HttpResponse, JsonResponse
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError


def floor(request):
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    body = request.body
    try:
        Bundle.model_validate_json(body)
    except ValidationError as exc:
        return JsonResponse({"error": "not a FHIR Bundle", "issues": exc.error_count()}, status=400)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO bench_floor (body) VALUES (%s::jsonb) RETURNING id", [body.decode()])
        (row_id,) = cursor.fetchone()
    return JsonResponse({"id": row_id}, status=201)
