from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from network.importing import READERS, format_of, network_import, rows_from_file


class Command(BaseCommand):
    help = (
        "Load or update the network from a CSV (one row per professional role) or a FHIR Bundle. "
        "Idempotent; --dry-run reports what would change and writes nothing. Exits 1 when any row failed "
        "(the good rows are still applied unless --dry-run). The formats are described in "
        "network/samples/README.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="the .csv or .json file")
        parser.add_argument(
            "--format", dest="fmt", choices=sorted(READERS), help="csv or fhir (default: from the extension)"
        )
        parser.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
        parser.add_argument(
            "--actor", default="manage.py import_network", help="who runs the import (logged)"
        )

    def handle(self, *args, path, fmt, dry_run, actor, **options):
        fmt = fmt or format_of(path)
        if fmt is None:
            raise CommandError(
                f"cannot tell the format of {path!r} from its extension: give --format csv or fhir"
            )
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path!r}: {exc.strerror}") from None

        report = network_import(rows=rows_from_file(content, fmt), dry_run=dry_run, actor=actor)

        self.stdout.write(f"Network import from {path}" + (" (dry run)" if dry_run else ""))
        self.stdout.write(report.as_text(verbose=options["verbosity"] >= 2))
        if report.errors:
            raise CommandError(
                f"{report.failed} row(s) failed" + ("" if dry_run else "; the other rows were applied"),
                returncode=1,
            )
