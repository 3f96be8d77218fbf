"""The printable manifest: landscape A4 for an operations engineer's desk.

fpdf2 embeds (a subset of) a TrueType font, so Japanese organisation and payload names print
as written. The font is Debian's IPA P Gothic (package ``fonts-ipafont-gothic``), found at its
Debian path; without it rendering stops with an error that names the package to install,
rather than printing empty boxes where the names should be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace

from bookings.models import ManifestVersion
from marketplace.money import format_mass

DEFAULT_FONT_PATH = "/usr/share/fonts/opentype/ipafont-gothic/ipagp.ttf"
FONT_PACKAGE = "fonts-ipafont-gothic"
FONT = "ipagothic"

RED = (190, 20, 20)
GREY = (235, 235, 235)
AMBER = (150, 90, 0)


class ManifestFontMissing(RuntimeError):
    """The CJK TrueType font is not installed where the renderer looks for it."""


def font_path() -> Path:
    return Path(getattr(settings, "MOONSLOT_MANIFEST_FONT", DEFAULT_FONT_PATH))


def font_available() -> bool:
    return font_path().is_file()


def add_cjk_font(pdf: FPDF) -> None:
    """Register the Japanese-capable font as ``FONT`` (also used by the billing documents),
    or stop with an error naming the package to install."""
    path = font_path()
    if not path.is_file():
        raise ManifestFontMissing(
            f"The PDF needs the IPA Gothic TrueType font at {path}: install the "
            f"Debian package {FONT_PACKAGE} (apt-get install {FONT_PACKAGE}), or point "
            f"MOONSLOT_MANIFEST_FONT at another .ttf with Japanese glyphs."
        )
    pdf.add_font(FONT, "", str(path))


class _ManifestPDF(FPDF):
    def __init__(self, *, title: str) -> None:
        super().__init__(orientation="landscape", unit="mm", format="A4")
        self.running_title = title
        self.set_margins(10, 12, 10)
        self.set_auto_page_break(auto=True, margin=14)
        add_cjk_font(self)
        self.set_font(FONT, size=9)

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(FONT, size=7)
        self.set_text_color(90, 90, 90)
        self.cell(0, 4, self.running_title, align="L")
        self.set_x(self.l_margin)
        self.cell(0, 4, f"Page {self.page_no()} / {{nb}}", align="R")
        self.set_text_color(0, 0, 0)


def _kg(grams: int | None) -> str:
    return "" if grams is None else format_mass(grams)


def _signed_kg(grams: int) -> str:
    return _kg(grams) if grams >= 0 else f"−{_kg(-grams)}"


def _dims(line: dict[str, Any]) -> str:
    dims = line.get("dimensions_mm")
    return " × ".join(str(d) for d in dims) if dims else "—"


def _review(line: dict[str, Any]) -> str:
    status = str(line.get("review_status") or "declared").replace("_", " ")
    return status if line.get("cleared") else f"NOT CLEARED: {status}"


# The lines table is drawn by hand: fpdf2's table lays out every following row again at each
# row to place its page breaks, which is quadratic (minutes for a few thousand lines). Here a
# row costs one width measurement per cell, and wraps only the cells that do not fit.
LINE_FONT_SIZE = 7.5
LINE_HEIGHT = 3.4
CELL_PAD = 0.8
LINE_WIDTHS = (8, 15, 23, 26, 42, 40, 17, 25, 11, 30, 17, 23)
LINE_ALIGNS = ("R", "L", "L", "L", "L", "L", "R", "L", "R", "L", "L", "L")
LINE_HEADINGS = (
    "#", "Ref.", "Waybill", "Class", "Customer", "Payload", "Mass",
    "L × W × H mm", "W", "Hazards", "Export", "Review",
)  # fmt: skip


class _Measure:
    """Character widths at the lines table's font size, measured once per character."""

    def __init__(self, pdf: FPDF) -> None:
        self.pdf = pdf
        self.widths: dict[str, float] = {}

    def width(self, text: str) -> float:
        total = 0.0
        for char in text:
            known = self.widths.get(char)
            if known is None:
                known = self.widths[char] = self.pdf.get_string_width(char)
            total += known
        return total

    def wrap(self, text: str, width: float) -> list[str]:
        """Greedy wrap: break after a space when the line has one, else between characters
        (Japanese has no spaces to break at)."""
        room = width - 2 * CELL_PAD
        if self.width(text) <= room:
            return [text]
        lines: list[str] = []
        line, used, last_space = "", 0.0, -1
        for char in text:
            char_width = self.width(char)
            if used + char_width > room and line:
                if last_space > 0:
                    lines.append(line[:last_space].rstrip())
                    line = line[last_space + 1 :]
                else:
                    lines.append(line)
                    line = ""
                used, last_space = self.width(line), -1
                if char == " " and not line:
                    continue
            line += char
            used += char_width
            if char == " ":
                last_space = len(line) - 1
        if line:
            lines.append(line)
        return lines


def _draw_row(
    pdf: FPDF,
    measure: _Measure,
    texts: tuple[str, ...],
    *,
    heading: bool = False,
    shade: bool = False,
    last_color: tuple[int, int, int] | None = None,
) -> None:
    cells = [measure.wrap(text, width) for width, text in zip(LINE_WIDTHS, texts, strict=True)]
    height = max(len(lines) for lines in cells) * LINE_HEIGHT + 2 * CELL_PAD
    if not heading and pdf.get_y() + height > pdf.page_break_trigger:
        pdf.add_page()
        _draw_row(pdf, measure, LINE_HEADINGS, heading=True)
    x, y = pdf.l_margin, pdf.get_y()
    total_width = sum(LINE_WIDTHS)
    if heading or shade:
        pdf.set_fill_color(*(GREY if heading else (246, 246, 246)))
        pdf.rect(x, y, total_width, height, style="F")
    # Baseline of the first line: the font's ascent sits inside the padded line box.
    baseline = y + CELL_PAD + LINE_HEIGHT * 0.78
    for column, (width, align, lines) in enumerate(
        zip(LINE_WIDTHS, LINE_ALIGNS, cells, strict=True)
    ):
        colored = last_color is not None and column == len(LINE_WIDTHS) - 1
        if last_color is not None and colored:
            pdf.set_text_color(*last_color)
        for number, text in enumerate(lines):
            left = x + CELL_PAD
            if align == "R":
                left = x + width - CELL_PAD - measure.width(text)
            # text() skips fpdf2's line-breaking machinery: several times faster than cell().
            pdf.text(left, baseline + number * LINE_HEIGHT, text)
        if colored:
            pdf.set_text_color(0, 0, 0)
        x += width
    pdf.set_draw_color(180, 180, 180)
    pdf.line(pdf.l_margin, y + height, pdf.l_margin + total_width, y + height)
    pdf.set_xy(pdf.l_margin, y + height)


def manifest_pdf(version: ManifestVersion) -> bytes:
    """The version as a PDF: title block, alerts in red, totals per class and for the lander,
    then every line, with the table heading repeated on each page."""
    content = version.content
    mission = content["mission"]
    lander = content["lander"]
    totals = content["totals"]
    title = f"Payload manifest {mission['code']} v{version.number}"
    pdf = _ManifestPDF(title=f"{title} · {version.digest[:12]}")
    pdf.set_title(title)
    pdf.set_creator("Moonslot")
    pdf.add_page()

    pdf.set_font(FONT, size=16)
    names = mission["name"] + (f" / {mission['name_ja']}" if mission.get("name_ja") else "")
    pdf.cell(0, 9, f"{title} — {names}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, size=9)

    facts = [
        ("Mission", f"{mission['code']} {names}"),
        ("Lander", f"{lander['name']} (payload capacity {_kg(lander['payload_capacity_g'])})"),
        ("Landing site", mission.get("landing_site") or "—"),
        (
            "Launch window",
            f"{mission['launch_window_start'][:10]} – {mission['launch_window_end'][:10]}",
        ),
        ("Booking cutoff", mission["booking_cutoff"][:16].replace("T", " ") + " UTC"),
        (
            "Version",
            f"{version.number}" + (" — FROZEN at the booking cutoff" if version.frozen else ""),
        ),
        ("Built at", version.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Built because", version.trigger or "—"),
        ("Digest (SHA-256)", version.digest),
    ]
    with pdf.table(
        col_widths=(40, 237),
        first_row_as_headings=False,
        text_align="LEFT",
        line_height=5,
        borders_layout="HORIZONTAL_LINES",
    ) as table:
        for label, value in facts:
            row = table.row()
            row.cell(label, style=FontFace(color=(90, 90, 90)))
            row.cell(value)
    pdf.ln(3)

    if content["alerts"]:
        pdf.set_text_color(*RED)
        pdf.set_font(FONT, size=11)
        pdf.cell(0, 7, "ALERTS", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font(FONT, size=9)
        for alert in content["alerts"]:
            pdf.multi_cell(0, 5, f"• {alert['message']}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(0, 0, 0)
        pdf.ln(2)

    pdf.set_font(FONT, size=11)
    pdf.cell(0, 7, "Totals", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, size=9)
    heading = FontFace(fill_color=GREY)
    with pdf.table(
        col_widths=(70, 30, 35, 35, 35, 25, 47),
        text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
        line_height=5,
        headings_style=heading,
    ) as table:
        table.row(
            [
                "Class",
                "Position",
                "Capacity",
                "Manifested",
                "Remaining",
                "Lines",
                "Units (of capacity)",
            ]
        )
        for cls in content["classes"]:
            over = cls["manifested_g"] > cls["capacity_g"]
            style = FontFace(color=RED) if over else None
            name = cls["name"] + (f" / {cls['name_ja']}" if cls.get("name_ja") else "")
            units = (
                f"{cls['manifested_units']} / {cls['capacity_units']}"
                if cls.get("capacity_units")
                else ""
            )
            row = table.row()
            for text in (
                name,
                cls.get("position") or "—",
                _kg(cls["capacity_g"]),
                _kg(cls["manifested_g"]),
                _kg(cls["remaining_g"])
                if cls["remaining_g"] >= 0
                else f"−{_kg(-cls['remaining_g'])}",
                str(cls["lines"]),
                units,
            ):
                row.cell(text, style=style)
        over = totals["mass_g"] > totals["lander_capacity_g"]
        style = FontFace(color=RED if over else None, fill_color=GREY)
        row = table.row()
        for text in (
            "Lander total",
            f"allocated {_kg(totals['allocated_g'])}",
            _kg(totals["lander_capacity_g"]),
            _kg(totals["mass_g"]),
            _signed_kg(totals["remaining_g"]),
            str(totals["lines"]),
            str(totals["units"] or ""),
        ):
            row.cell(text, style=style)
    pdf.ln(2)
    pdf.cell(
        0,
        5,
        f"Cleared to fly: {totals['cleared']} · under review: {totals['under_review']} · "
        f"rejected: {totals['rejected']} · with hazards: {totals['hazardous']} · "
        f"export controlled: {totals['export_controlled']}",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.ln(3)

    pdf.set_font(FONT, size=11)
    pdf.cell(0, 7, "Lines", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, size=LINE_FONT_SIZE)
    measure = _Measure(pdf)
    _draw_row(pdf, measure, LINE_HEADINGS, heading=True)
    for index, line in enumerate(content["lines"], start=1):
        customer = line["customer"]
        if line.get("end_customer"):
            customer += f" (for {line['end_customer']})"
        mass = _kg(line["mass_g"])
        if line.get("quantity"):
            mass = f"{line['quantity']} u · {mass}"
        review_color = None if line.get("cleared") else AMBER
        if line.get("review_status") == "rejected":
            review_color = RED
        texts = (
            str(index),
            line["reference"],
            line["waybill"],
            line["slot_class"] + (f" @{line['position']}" if line.get("position") else ""),
            customer,
            line["payload"] or "(not declared)",
            mass,
            _dims(line),
            "" if line.get("power_w") is None else str(line["power_w"]),
            "; ".join(line.get("hazards") or []) or "—",
            line.get("export_classification") or "—",
            _review(line),
        )
        _draw_row(pdf, measure, texts, shade=index % 2 == 0, last_color=review_color)
    return bytes(pdf.output())
