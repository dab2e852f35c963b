"""The reseller taxonomy: the words restyle uses for categories and attributes,
and the one place that maps the words experts and models use onto it
(:func:`map_category`, :func:`map_facet_term`), cleans text from the web and
reads sizes and model numbers out of text printed on an item."""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "CATEGORIES",
    "FACETS",
    "PROMPTS",
    "clean_text",
    "map_category",
    "map_facet_term",
    "materials",
    "model_numbers",
    "registration_numbers",
    "sizes",
]

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


# Words services commonly use for a taxonomy category. Generic words such as
# "footwear" or "clothing" are left out on purpose: they do not pick a category.
_CATEGORY_SYNONYMS: dict[str, str] = {
    "sneaker": "sneakers", "trainer": "sneakers", "trainers": "sneakers",
    "running shoe": "sneakers", "athletic shoe": "sneakers", "basketball shoe": "sneakers",
    "tennis shoe": "sneakers", "skate shoe": "sneakers",
    "tee": "t-shirt", "t shirt": "t-shirt", "tshirt": "t-shirt", "tee shirt": "t-shirt",
    "pants": "trousers", "slacks": "trousers", "chinos": "trousers",
    "jean": "jeans", "denim jeans": "jeans",
    "purse": "handbag", "tote bag": "handbag", "shoulder bag": "handbag", "tote": "handbag",
    "clutch": "handbag", "satchel": "handbag", "rucksack": "backpack",
    "jumper": "sweater", "pullover": "sweater", "sweatshirt": "hoodie",
    "hooded sweatshirt": "hoodie",
    "wristwatch": "watch", "analog watch": "watch", "digital watch": "watch",
    "necklace": "jewelry", "ring": "jewelry", "bracelet": "jewelry", "earrings": "jewelry",
    "earring": "jewelry", "jewellery": "jewelry", "pendant": "jewelry",
    "cap": "hat", "baseball cap": "hat", "beanie": "hat", "fedora": "hat",
    "shades": "sunglasses", "eyewear": "sunglasses",
    "coffee cup": "mug", "cup": "mug",
    "headset": "headphones", "earphones": "headphones", "earbuds": "headphones",
    "mobile phone": "phone", "cell phone": "phone", "smartphone": "phone",
    "lp": "vinyl record", "record": "vinyl record", "vinyl": "vinyl record",
    "high heels": "heels", "pumps": "heels", "stilettos": "heels",
    "boot": "boots", "ankle boot": "boots", "sandal": "sandals", "loafer": "loafers",
    "sport coat": "blazer", "overcoat": "coat", "trench coat": "coat", "parka": "coat",
    "tights": "leggings", "videogame": "video game", "console game": "video game",
    "lamp shade": "lamp", "table lamp": "lamp", "teddy bear": "toy", "action figure": "toy",
    "novel": "book", "hardcover": "book", "paperback": "book",
}

_TERM_SYNONYMS: dict[str, tuple[str, str]] = {
    "gray": ("color", "grey"), "tan": ("color", "beige"), "cream": ("color", "beige"),
    "khaki": ("color", "beige"), "gold": ("color", "yellow"), "silver": ("color", "grey"),
    "violet": ("color", "purple"), "maroon": ("color", "red"), "burgundy": ("color", "red"),
    "camo": ("pattern", "camouflage"), "stripes": ("pattern", "striped"),
    "stripe": ("pattern", "striped"), "checked": ("pattern", "plaid"),
    "tartan": ("pattern", "plaid"), "flowers": ("pattern", "floral"),
    "polka dots": ("pattern", "polka dot"), "sportswear": ("style", "athletic"),
    "retro": ("style", "vintage"), "knitted": ("material", "knit"),
    "knitwear": ("material", "knit"), "porcelain": ("material", "ceramic"),
    "wooden": ("material", "wood"), "steel": ("material", "metal"),
    "stainless steel": ("material", "metal"),
}

_TERMS: dict[str, tuple[str, str]] = {
    term: (facet, term) for facet, terms in FACETS.items() for term in terms
}

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")
_SPACES = re.compile(r"\s+")


def clean_text(text: str, *, limit: int) -> str:
    """``text`` as one line of printable characters, at most ``limit`` long.

    Control, zero-width and bidirectional-override characters are removed, so
    text from the web cannot hide content or break out of the line it is on.
    """
    text = unicodedata.normalize("NFKC", str(text))
    text = _CONTROL.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: max(0, limit - 1)].rstrip() + "…"
    return text


def _key(text: str) -> str:
    return _SPACES.sub(" ", text.strip().lower().replace("_", " ")).strip(" .,;:!")


def map_category(text: str | None) -> str | None:
    """The taxonomy category ``text`` names, or None when it names none.

    Accepts the category itself, a plural or singular form, a common synonym
    ("trainers", "purse") or a phrase ending in one ("denim jacket").
    """
    if not text:
        return None
    t = _key(text)
    if not t:
        return None
    words = t.split()
    # Try the whole phrase, then ever shorter tails: "blue denim jacket" -> "jacket".
    for start in range(len(words)):
        tail = " ".join(words[start:])
        if tail in CATEGORIES:
            return tail
        if tail in _CATEGORY_SYNONYMS:
            return _CATEGORY_SYNONYMS[tail]
        for category in CATEGORIES:
            if tail.rstrip("s") == category.rstrip("s"):
                return category
    return None


def map_facet_term(text: str | None) -> tuple[str, str] | None:
    """``(facet, term)`` when ``text`` is a colour, material, pattern or style term."""
    if not text:
        return None
    t = _key(text)
    return _TERMS.get(t) or _TERM_SYNONYMS.get(t)


_SIZE_PATTERNS = (
    re.compile(r"\bSIZE\s*[:#]?\s*((?:EU|US|UK)\s?\d{1,2}(?:[.,]5)?|[2-4]?X{0,3}[SML]|\d{1,2}(?:[.,]5)?)\b"),
    re.compile(r"\b(EU|US|UK)\s?(\d{1,2}(?:[.,]5)?)\b"),
    re.compile(r"\b(W\s?\d{2}\s?L\s?\d{2})\b"),
)
_LETTER_SIZE = re.compile(r"^(?:XXS|XS|S|M|L|XL|XXL|XXXL|[2-4]XL)$")
_MODEL_NUMBER = re.compile(r"\b[A-Z0-9]{2,}(?:-[A-Z0-9]{2,}){0,2}\b")


def sizes(text: str) -> list[str]:
    """Sizes printed in ``text``: "EU 42", "US 9.5", "W32 L34", or a letter size after SIZE."""
    upper = text.upper()
    found: list[str] = []
    stripped = upper.strip()
    if _LETTER_SIZE.match(stripped):
        found.append(stripped)
    for pattern in _SIZE_PATTERNS:
        for match in pattern.finditer(upper):
            value = " ".join(g for g in match.groups() if g)
            value = _SPACES.sub(" ", value.replace(",", ".")).strip()
            value = re.sub(r"^(EU|US|UK)(\d)", r"\1 \2", value)
            value = re.sub(r"^W\s?(\d{2})\s?L\s?(\d{2})$", r"W\1 L\2", value)
            if value and value not in found:
                found.append(value)
    return found


def model_numbers(text: str) -> list[str]:
    """Style or model numbers printed in ``text``, such as "CW2288-111" or "M990GL6".

    A model number mixes letters and at least three digits, or is digits
    joined by hyphens; sizes and plain numbers are not model numbers.
    """
    upper = text.upper()
    size_values = {s.replace(" ", "") for s in sizes(upper)}
    found: list[str] = []
    for match in _MODEL_NUMBER.finditer(upper):
        token = match.group(0)
        digits = sum(ch.isdigit() for ch in token)
        letters = sum(ch.isalpha() for ch in token)
        if not 5 <= len(token) <= 16 or digits < 3:
            continue
        if letters == 0 and "-" not in token:
            continue
        if token.replace("-", "") in size_values or token in size_values:
            continue
        if token not in found:
            found.append(token)
    return found


# "60% COTTON", "100 % Polyester", "40%POLYESTER" on a care label.
_COMPOSITION = re.compile(r"(\d{1,3}(?:[.,]\d)?)\s?%\s*([A-Za-z][A-Za-z\- ]{1,29}[A-Za-z])")
# US (RN) and Canadian (CA) registration numbers printed on care labels.
_REGISTRATION = re.compile(r"\b(RN|CA)\s*#?\s*:?\s*(\d{4,6})\b")


def materials(text: str) -> list[tuple[str, float]]:
    """The fibres of a care label's composition line with their shares (0 to
    1): "60% COTTON 40% POLYESTER" gives [("cotton", 0.6), ("polyester", 0.4)];
    a known material term is given in the taxonomy's words."""
    found: list[tuple[str, float]] = []
    for share, name in _COMPOSITION.findall(text):
        value = float(share.replace(",", ".")) / 100.0
        if not 0 < value <= 1:
            continue
        words = _SPACES.sub(" ", name).strip().lower()
        term = map_facet_term(words) or map_facet_term(words.split(" ")[0])
        fibre = term[1] if term and term[0] == "material" else words.split(" ")[0]
        found.append((fibre, value))
    return found


def registration_numbers(text: str) -> list[tuple[str, str]]:
    """RN and CA numbers printed in ``text``: ``("rn_number", "12345")``."""
    return [(f"{kind.lower()}_number", number)
            for kind, number in _REGISTRATION.findall(text.upper())]
