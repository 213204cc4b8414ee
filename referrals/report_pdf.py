"""The report as a one-page PDF (two at most), drawn with ReportLab.

ReportLab because it draws: no HTML engine, no browser, no external process, so that a page costs milliseconds
and a worker's memory stays flat (bench/reports.py holds it to that). The chart is drawn with its graphics
shapes on the server; nothing is fetched.

Layout, for a phone as much as a desktop: US Letter, one column, 10.5 pt text with short lines, the four answers
first, then the chart, the measures table, the adverse events, and the signature state at the top and the foot.
Fonts: Helvetica, built into every PDF reader (nothing embedded, half the render time), for a report whose text
Latin-1 holds; DejaVu Sans from Debian's fonts-dejavu-core, embedded, for one that needs more (a name in Greek,
Cyrillic or Vietnamese). Without fonts-dejavu-core such characters print as boxes.
"""

import datetime as dt
import io
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.graphics.shapes import Drawing, Line, Rect, String
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import inch
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from referrals.models import Report, ReportKind, ReportStatus
from referrals.reports import ReportDraft, fmt, fmt_change

DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")


def _dejavu() -> tuple[str, str] | None:
    """(regular, bold) DejaVu Sans, registered with ReportLab, when Debian's fonts-dejavu-core is installed."""
    regular, bold = DEJAVU_DIR / "DejaVuSans.ttf", DEJAVU_DIR / "DejaVuSans-Bold.ttf"
    if not (regular.is_file() and bold.is_file()):
        return None
    if "DejaVuSans" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("DejaVuSans", str(regular)))
        pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(bold)))
    return "DejaVuSans", "DejaVuSans-Bold"


INK, MUTED, ACCENT, GOAL, WARN = (colors.HexColor(c) for c in ("#1a1a1a", "#5a5a5a", "#2f6db5", "#2e8b57", "#b3261e"))


class Type:
    """The fonts and paragraph styles of one document."""

    def __init__(self, font: str, bold: str):
        self.font, self.bold = font, bold
        self.base = ParagraphStyle("base", fontName=font, fontSize=10.5, leading=14, textColor=INK, alignment=TA_LEFT)
        self.small = ParagraphStyle("small", parent=self.base, fontSize=9, leading=12, textColor=MUTED)
        self.title = ParagraphStyle("title", parent=self.base, fontName=bold, fontSize=17, leading=21)
        self.heading = ParagraphStyle("heading", parent=self.base, fontName=bold, fontSize=11.5, leading=15,
                                      spaceBefore=8, spaceAfter=2, textColor=ACCENT)
        self.banner = ParagraphStyle("banner", parent=self.base, fontName=bold, fontSize=10.5, leading=14,
                                     textColor=colors.white)
        self.strong = ParagraphStyle("strong", parent=self.base, fontName=bold)
        self.small_strong = ParagraphStyle("small-strong", parent=self.small, fontName=bold)


# Helvetica (built into every PDF reader: nothing embedded) for text that Latin-1 holds, which is most reports
# and renders in half the time; DejaVu, embedded, for the rest.
LATIN = Type("Helvetica", "Helvetica-Bold")
_unicode_fonts = _dejavu()
UNICODE = Type(*_unicode_fonts) if _unicode_fonts else LATIN


def _type_for(texts) -> Type:
    try:
        "".join(t or "" for t in texts).encode("latin-1")
        return LATIN
    except UnicodeEncodeError:
        return UNICODE


QUESTIONS = (
    ("answer_goals", "1. Were the referral's goals addressed?"),
    ("answer_barriers", "2. What issues and barriers remain?"),
    ("answer_participation", "3. Participation"),
    ("answer_plan", "4. Plan, and what the physician should do next"),
)
GOAL_STATUS = {"met": "met", "progressing": "improving", "not-met": "not yet met", "not-measured": "not measured"}


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(escape(text or "").replace("\n", "<br/>"), style)


def _date(iso: str) -> str:
    try:
        return dt.date.fromisoformat(iso).strftime("%b %-d, %Y")
    except (TypeError, ValueError):
        return iso or "\u2013"


def signature_state(report: Report) -> tuple[str, colors.Color]:
    """What the report's state says to its reader, and the banner's colour."""
    if report.status == ReportStatus.SIGNED:
        when = report.signed_at.strftime("%b %-d, %Y") if report.signed_at else ""
        who = report.signed_by.removeprefix("user:")
        return f"Final \u2013 reviewed and signed by {who} on {when}", GOAL
    if report.status == ReportStatus.SENT_UNSIGNED:
        return "Preliminary \u2013 not reviewed by the therapist", WARN
    if report.status == ReportStatus.SUPERSEDED:
        return "Superseded by a later version of this report", MUTED
    return "Draft \u2013 not sent", MUTED


def pavs_chart(draft: ReportDraft, t: Type = LATIN, width: float = 6.8 * inch, height: float = 1.55 * inch) -> Drawing:
    """PAVS minutes per week: a bar per week (the patient's last check-in that week), the baseline as a dashed
    line, the goal as a solid one. Weeks without a check-in show no bar."""
    line = draft.measure("pavs-minutes")
    baseline, goal = (line.baseline, line.goal) if line else (None, None)
    values = [w.minutes_per_week for w in draft.pavs_weeks]
    highest = max([v for v in values if v is not None] + [baseline or 0, goal or 0, 30])
    step = next(s for s in (10, 20, 25, 50, 100, 200, 250, 500, 1000, 10**9) if highest / s <= 4)
    top = highest * 1.15
    left, bottom, right, plot_top = 34, 16, width - 4, height - 14
    drawing = Drawing(width, height)
    scale = (plot_top - bottom) / top
    drawing.add(String(0, height - 9, "PAVS minutes per week", fontName=t.bold, fontSize=9, fillColor=INK))
    legend_x = 150
    for label, color, dashed in (("weekly check-in", ACCENT, False), ("baseline", MUTED, True), ("goal", GOAL, False)):
        drawing.add(Line(legend_x, height - 6, legend_x + 14, height - 6, strokeColor=color, strokeWidth=2,
                         strokeDashArray=(3, 2) if dashed else None))
        drawing.add(String(legend_x + 18, height - 9, label, fontName=t.font, fontSize=8, fillColor=MUTED))
        legend_x += 30 + pdfmetrics.stringWidth(label, t.font, 8)
    for tick in range(0, int(highest) + 1, step):
        y = bottom + tick * scale
        drawing.add(Line(left, y, right, y, strokeColor=colors.HexColor("#e2e2e2"), strokeWidth=0.5))
        drawing.add(String(left - 4, y - 3, fmt(tick), fontName=t.font, fontSize=7, fillColor=MUTED,
                           textAnchor="end"))
    n = max(len(values), 1)
    slot = (right - left) / n
    for i, (week, value) in enumerate(zip(draft.pavs_weeks, values)):
        x = left + i * slot
        if value is not None:
            drawing.add(Rect(x + slot * 0.18, bottom, slot * 0.64, value * scale, fillColor=ACCENT,
                             strokeColor=None))
            drawing.add(String(x + slot / 2, bottom + value * scale + 2, fmt(value), fontName=t.font, fontSize=7,
                               fillColor=INK, textAnchor="middle"))
        if n <= 16 or i % 2 == 0:
            drawing.add(String(x + slot / 2, 5, f"wk {i + 1}", fontName=t.font, fontSize=7, fillColor=MUTED,
                               textAnchor="middle"))
    for value, color, dashed in ((baseline, MUTED, True), (goal, GOAL, False)):
        if value is not None:
            y = bottom + value * scale
            drawing.add(Line(left, y, right, y, strokeColor=color, strokeWidth=1.4,
                             strokeDashArray=(4, 3) if dashed else None))
    drawing.add(Line(left, bottom, right, bottom, strokeColor=MUTED, strokeWidth=0.8))
    return drawing


def _measures_table(draft: ReportDraft, t: Type) -> Table:
    rows = [["Measure", "Baseline", "Latest", "Change", "Goal"]]
    for m in draft.measures:
        if m.baseline is None and m.latest is None and m.code not in ("pavs-minutes",):
            continue
        rows.append([
            m.label,
            m.baseline_text + f" {m.unit}" if m.baseline_text else fmt(m.baseline, m.unit),
            m.latest_text + f" {m.unit}" if m.latest_text else fmt(m.latest, m.unit),
            fmt_change(m.change, m.unit),
            fmt(m.goal, m.unit) if m.goal is not None else "",
        ])
    table = Table([[_p(c, t.base if r else t.strong) for c in row]
                   for r, row in enumerate(rows)],
                  colWidths=[1.9 * inch, 1.25 * inch, 1.25 * inch, 1.15 * inch, 1.2 * inch], repeatRows=1)
    table.setStyle(TableStyle([
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, INK),
        ("LINEBELOW", (0, 1), (-1, -1), 0.3, colors.HexColor("#d0d0d0")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ("LEFTPADDING", (0, 0), (-1, -1), 2),
    ]))
    return table


def _goals_table(draft: ReportDraft, t: Type) -> Table | None:
    if not draft.goals:
        return None
    rows = [[_p(h, t.small_strong) for h in ("Goal", "Target", "Baseline to latest", "Status")]]
    rows += [[_p(g.text, t.base), _p(g.target, t.base), _p(f"{fmt(g.baseline, g.unit)} to {fmt(g.latest, g.unit)}",
                                                          t.base),
              _p(GOAL_STATUS.get(g.status, g.status), t.base)] for g in draft.goals]
    table = Table(rows, colWidths=[2.6 * inch, 1.5 * inch, 1.6 * inch, 1.05 * inch])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 2),
                               ("LINEBELOW", (0, 0), (-1, 0), 0.5, MUTED),
                               ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    return table


def report_pdf(*, report: Report) -> bytes:
    """The report's PDF: its drafted figures (Report.draft), the therapist's answers and its signature state.
    One Letter page for a typical case; a long record (many adverse events, long answers) flows onto a second."""
    draft = ReportDraft.from_json(report.draft)
    t = _type_for([draft.patient, draft.professional, draft.requester, draft.clinic, draft.program,
                   report.signed_by, *(getattr(report, name) for name, _ in QUESTIONS),
                   *(g.text for g in draft.goals), *(a.action for a in draft.adverse_events)])
    out = io.BytesIO()
    title = f"{ReportKind(report.kind).label}: {draft.patient or 'patient'}"
    doc = SimpleDocTemplate(out, pagesize=LETTER, leftMargin=0.75 * inch, rightMargin=0.75 * inch,
                            topMargin=0.6 * inch, bottomMargin=0.6 * inch, title=title,
                            author="Exercise referral hub", subject="PA Intervention Report")
    state, state_color = signature_state(report)
    banner = Table([[_p(state, t.banner)]], colWidths=[doc.width])
    banner.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), state_color),
                                ("TOPPADDING", (0, 0), (-1, -1), 3), ("BOTTOMPADDING", (0, 0), (-1, -1), 4)]))
    born = f" (born {draft.patient_birth_date})" if draft.patient_birth_date else ""
    story = [
        _p(ReportKind(report.kind).label, t.title),
        _p(f"Patient: {draft.patient or 'not named'}{born}   \u00b7   Referral {draft.referral_id}", t.base),
        _p(f"Period: {_date(draft.period_start)} to {_date(draft.period_end)}", t.base),
        _p(f"Exercise professional: {draft.professional or 'not assigned'}", t.base),
        _p(f"Referred by: {', '.join(x for x in (draft.requester, draft.clinic) if x)}", t.small),
        Spacer(1, 4),
        banner,
    ]
    for name, question in QUESTIONS:
        story += [_p(question, t.heading), _p(getattr(report, name), t.base)]
        if name == "answer_goals" and (goals := _goals_table(draft, t)) is not None:
            story += [Spacer(1, 2), goals]
    if draft.program:
        story.append(_p(f"Program: {draft.program}", t.small))
    story += [Spacer(1, 6), KeepTogether([pavs_chart(draft, t)])]
    story += [_p("Measures", t.heading), _measures_table(draft, t)]
    story.append(_p("Adverse events", t.heading))
    if draft.adverse_events:
        for a in draft.adverse_events:
            hold = "; program put on hold" if a.put_on_hold else ""
            story.append(_p(f"{_date(a.occurred_on)}: {a.kind}, {a.severity}{', serious' if a.serious else ''}"
                            f"{hold}. {a.action}".strip(), t.base))
    else:
        story.append(_p("None recorded.", t.base))
    story += [Spacer(1, 8), _p(f"{state}. Drafted by the exercise referral hub from the therapist's record.",
                                t.small)]
    doc.build(story)
    return out.getvalue()
