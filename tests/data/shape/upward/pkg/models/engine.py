from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..web.ui import Page
