"""An open PDF as the agent sees it: page texts, BM25 page search, page and region images.

Images are rendered with pymupdf straight at the scale that fits them into one fixed box (no
resampling), centred on black: a page at the configured dpi (scaled down only if the page is
larger than a US-letter page, which the box is sized for), a zoomed region at whatever scale
fills the box, up to `MAX_ZOOM_DPI`. Renders are cached per document, texts extracted on first use.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pymupdf

from turngym.envs.bm25 import BM25Index

LETTER = (612.0, 792.0)  # points: the box is a letter page at the configured dpi
MAX_ZOOM_DPI = 400
RENDER_CACHE = 12  # renders kept per document (a 96-dpi page is 2.6 MB)


def image_shape(dpi: int) -> tuple[int, int, int]:
    """The fixed observation image shape at `dpi`: a US-letter page, portrait."""
    return round(LETTER[1] * dpi / 72), round(LETTER[0] * dpi / 72), 3


class PdfDocument:
    """One PDF. `page` arguments are 1-based, as page numbers are printed and asked about."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.pdf = pymupdf.open(self.path)  # raises on a missing or unreadable file
        if not self.pdf.is_pdf or self.pdf.page_count == 0:
            raise ValueError(f"{self.path.name} is not a PDF with pages")
        self.pages = self.pdf.page_count
        self._texts: list[str] | None = None
        self._index: BM25Index | None = None
        self._renders: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def close(self) -> None:
        self.pdf.close()

    @property
    def texts(self) -> list[str]:
        """Each page's text in the order the PDF lays it out (columns one after the other)."""
        if self._texts is None:
            self._texts = [page.get_text() for page in self.pdf]
        return self._texts

    def search(self, query: str, k: int = 5) -> list[int]:
        """The (at most) k best pages for `query` by BM25, best first."""
        if self._index is None:
            self._index = BM25Index(self.texts)
        return [i + 1 for i in self._index.search(query, k)]

    def render(self, page: int, dpi: int, region: tuple[float, float, float, float] | None = None) -> np.ndarray:
        """Page `page` (or its `region`, fractions x0, y0, x1, y1 of the page) in the box of `image_shape(dpi)`."""
        key = (page, dpi, region)
        if key in self._renders:
            self._renders.move_to_end(key)
            return self._renders[key]
        height, width, _ = image_shape(dpi)
        source = self.pdf[page - 1]
        rect = source.rect
        clip = rect if region is None else pymupdf.Rect(rect.x0 + region[0] * rect.width,
                                                        rect.y0 + region[1] * rect.height,
                                                        rect.x0 + region[2] * rect.width,
                                                        rect.y0 + region[3] * rect.height)
        fit = min(width / clip.width, height / clip.height)
        scale = min(fit, dpi / 72) if region is None else min(fit, MAX_ZOOM_DPI / 72)
        pix = source.get_pixmap(matrix=pymupdf.Matrix(scale, scale), clip=clip, alpha=False,
                                colorspace=pymupdf.csRGB)
        pixels = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, :pix.width * 3]
        pixels = pixels.reshape(pix.height, pix.width, 3)[:height, :width]
        image = np.zeros((height, width, 3), np.uint8)
        top, left = (height - pixels.shape[0]) // 2, (width - pixels.shape[1]) // 2
        image[top:top + pixels.shape[0], left:left + pixels.shape[1]] = pixels
        image.flags.writeable = False  # shared through the cache
        self._renders[key] = image
        if len(self._renders) > RENDER_CACHE:
            self._renders.popitem(last=False)
        return image
