"""The network import in Django's admin: upload a CSV or FHIR Bundle, read the dry run, then apply it.

Staff with the add and change permissions on the network's models only. The previewed file travels back with
the "Apply" button as a signed value, so what is applied is exactly the file that was previewed (the database
may have moved on; the apply shows its own report)."""

from django import forms
from django.contrib import admin
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path

from network.importing import READERS, format_of, network_import, rows_from_file

MAX_UPLOAD_BYTES = 1_000_000
SIGNING_SALT = "network.admin_import"
PREVIEW_MAX_AGE_SECONDS = 3600
REQUIRED_PERMISSIONS = [
    f"network.{action}_{model}"
    for model in ("organization", "site", "professional", "credential", "professionalrole")
    for action in ("add", "change")
]


def _format_choices() -> list[tuple[str, str]]:
    # Read when the form is built: the FHIR reader is registered by another app's ready().
    return [("", "from the file's extension"), *((fmt, reader.label) for fmt, reader in READERS.items())]


class ImportForm(forms.Form):
    file = forms.FileField(
        help_text="A .csv (one row per professional role) or a .json FHIR Bundle, at most 1 MB."
    )
    format = forms.ChoiceField(
        choices=_format_choices,
        required=False,
    )

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload is None:
            return cleaned
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is {MAX_UPLOAD_BYTES:,}."
            )
        cleaned["format"] = cleaned.get("format") or format_of(upload.name)
        if not cleaned["format"]:
            raise forms.ValidationError(
                "Cannot tell the format from the file name: choose CSV or FHIR Bundle."
            )
        try:
            cleaned["content"] = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError(
                "The file is not UTF-8 text; save it as UTF-8 (CSV UTF-8) and upload it again."
            ) from None
        return cleaned


def network_import_step(request, *, actor: str) -> dict:
    """One step of an import page, for any page that shows it (this admin's, the console's): GET gives the form;
    a POST with a file, the dry run and the signed ``preview`` to apply; a POST with ``preview``, the import of
    exactly that file. Returns the template context: ``form``, and ``report``, ``data``, ``filename``,
    ``preview`` or ``applied``, or ``problem``."""
    context = {"form": ImportForm()}
    if request.method == "POST" and "preview" in request.POST:
        try:
            preview = signing.loads(
                request.POST["preview"], salt=SIGNING_SALT, max_age=PREVIEW_MAX_AGE_SECONDS
            )
        except signing.BadSignature:
            context["problem"] = "The preview has expired or was altered; upload the file again."
        else:
            report = network_import(
                rows=rows_from_file(preview["content"], preview["format"]),
                dry_run=False,
                actor=actor,
            )
            context.update(report=report, data=report.as_dict(), filename=preview["filename"], applied=True)
    elif request.method == "POST":
        form = ImportForm(request.POST, request.FILES)
        context["form"] = form
        if form.is_valid():
            upload = form.cleaned_data
            report = network_import(
                rows=rows_from_file(upload["content"], upload["format"]),
                dry_run=True,
                actor=actor,
            )
            context.update(
                report=report,
                data=report.as_dict(),
                filename=upload["file"].name,
                preview=signing.dumps(
                    {
                        "content": upload["content"],
                        "format": upload["format"],
                        "filename": upload["file"].name,
                    },
                    salt=SIGNING_SALT,
                    compress=True,
                ),
            )
    return context


def network_import_view(request):
    """GET: the form. POST with a file: the dry run and an Apply button. POST with ``preview``: the import."""
    if not request.user.has_perms(REQUIRED_PERMISSIONS):
        raise PermissionDenied
    context = {**admin.site.each_context(request), "title": "Import the network",
               **network_import_step(request, actor=request.user.get_username())}
    return TemplateResponse(request, "admin/network/import.html", context)


class NetworkImportAdminMixin:
    """Adds ``<organization changelist>/import/`` (URL name ``network_import``) to a ModelAdmin."""

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(network_import_view), name="network_import"),
            *super().get_urls(),
        ]
