"""Every portal template keeps to a strict Content-Security-Policy: scripts and styles come from our own static
files only (no inline <script>, no style attribute or element, no on* handler, no CDN)."""

import re
from pathlib import Path

import pytest

import portal

TEMPLATES = sorted((Path(portal.__file__).parent / "templates").rglob("*.html"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_a_template_has_no_inline_script_style_or_remote_asset(template):
    text = re.sub(r"\{#.*?#\}", "", template.read_text())  # template comments never reach the browser
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), "inline <script>"
    assert not re.search(r"<style\b|\bstyle=", text), "inline style"
    assert not re.search(r"\son[a-z]+=", text), "inline event handler"
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "remote asset"


def test_there_are_templates_to_check():
    assert len(TEMPLATES) >= 10
