"""The reseller taxonomy: the words restyle uses for categories and attributes."""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "jacket", "coat", "blazer", "hoodie", "sweater", "cardigan", "t-shirt", "shirt",
    "blouse", "dress", "skirt", "jeans", "trousers", "shorts", "leggings", "suit",
    "sneakers", "boots", "heels", "sandals", "loafers", "handbag", "backpack", "wallet",
    "belt", "hat", "scarf", "sunglasses", "watch", "jewelry", "mug", "vase", "lamp",
    "camera", "headphones", "phone", "toy", "book", "vinyl record", "video game",
)

FACETS: dict[str, tuple[str, ...]] = {
    "color": (
        "black", "white", "grey", "blue", "navy", "red", "pink", "green", "yellow",
        "orange", "purple", "brown", "beige", "multicolor",
    ),
    "material": (
        "denim", "leather", "suede", "wool", "cotton", "silk", "linen", "polyester",
        "knit", "canvas", "metal", "ceramic", "plastic", "wood",
    ),
    "pattern": ("solid", "striped", "plaid", "floral", "polka dot", "camouflage", "graphic print"),
    "style": ("vintage", "streetwear", "formal", "casual", "athletic", "outdoor", "designer"),
}

#: Prompt templates per facet; ``{}`` is replaced by the term.
PROMPTS: dict[str, str] = {
    "category": "a photo of a {}, a secondhand item for sale",
    "color": "a photo of a {} colored item",
    "material": "a photo of an item made of {}",
    "pattern": "a photo of an item with a {} pattern",
    "style": "a photo of a {} style item",
}


def normalise_category(text: str | None) -> str | None:
    """Map a free-text category onto the taxonomy when it names one of its terms."""
    if not text:
        return None
    t = text.strip().lower()
    if t in CATEGORIES:
        return t
    for category in CATEGORIES:
        if t.rstrip("s") == category.rstrip("s"):
            return category
    return t
