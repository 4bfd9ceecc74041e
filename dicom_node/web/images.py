"""Key images for the study page: the stored source image, windowed as the overlay SC is (CT brain
window, MR percentiles: `outputs.overlay.grey_image`), as PNG; the page draws the finding's mark over it
in SVG at the same place and size as the SR region and the overlay's circle (`outputs.marks.marker`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
from PIL import Image

from dicom_node.ml.analysis import Finding
from dicom_node.outputs.marks import marker
from dicom_node.outputs.overlay import grey_image


def png(path: Path) -> bytes:
    """The stored image at `path`, windowed to grey, as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(grey_image(pydicom.dcmread(path))).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def place_marks(path: Path, marks: list[dict[str, Any]]) -> dict[str, Any]:
    """Columns, rows and each mark's circle (`cx`, `cy`, `r` in pixels) on the image at `path`."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    placed = []
    for mark in marks:
        center = mark.get("center")
        finding = Finding(label=str(mark.get("label", "")), probability=0.0, threshold=0.5, present=True,
                          region_center=(float(center[0]), float(center[1])) if center else None,
                          region_radius=mark.get("radius"))
        (cx, cy), r = marker(finding, ds)
        placed.append({**mark, "cx": round(cx, 1), "cy": round(cy, 1), "r": round(r, 1)})
    return {"cols": int(ds.Columns), "rows": int(ds.Rows), "marks": placed}
