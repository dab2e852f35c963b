"""Draw the sample photo and sample catalog in examples/ (run once; outputs are committed).

Every image is drawn here from shapes, so the samples are the project's own.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).parent
SIZE = 256

COLORS = {
    "blue": (40, 80, 170), "red": (190, 40, 40), "black": (25, 25, 25),
    "green": (40, 130, 70), "beige": (215, 195, 160), "white": (240, 240, 240),
    "brown": (120, 75, 40), "pink": (230, 140, 170),
}


def background(seed: int) -> Image.Image:
    rng = random.Random(seed)
    shade = rng.randint(200, 235)
    img = Image.new("RGB", (SIZE, SIZE), (shade, shade, shade - 5))
    return img


def jacket(draw: ImageDraw.ImageDraw, color: tuple[int, int, int]) -> None:
    draw.polygon([(70, 50), (110, 40), (146, 40), (186, 50), (220, 120), (195, 130),
                  (180, 100), (180, 215), (76, 215), (76, 100), (61, 130), (36, 120)], fill=color)
    draw.line([(128, 45), (128, 215)], fill=(220, 220, 220), width=3)
    for y in range(70, 210, 28):
        draw.ellipse([122, y, 134, y + 12], fill=(200, 170, 60))


def tshirt(draw: ImageDraw.ImageDraw, color: tuple[int, int, int]) -> None:
    draw.polygon([(80, 50), (108, 42), (148, 42), (176, 50), (215, 90), (190, 110),
                  (176, 95), (176, 210), (80, 210), (80, 95), (66, 110), (41, 90)], fill=color)
    draw.ellipse([108, 34, 148, 60], fill=(230, 230, 225))


def sneaker(draw: ImageDraw.ImageDraw, color: tuple[int, int, int]) -> None:
    draw.polygon([(40, 150), (70, 110), (120, 100), (150, 120), (210, 135), (225, 165),
                  (40, 170)], fill=color)
    draw.rectangle([38, 168, 228, 185], fill=(245, 245, 245))
    for x in range(85, 140, 12):
        draw.line([(x, 110), (x + 8, 125)], fill=(250, 250, 250), width=3)


def handbag(draw: ImageDraw.ImageDraw, color: tuple[int, int, int]) -> None:
    draw.arc([85, 40, 171, 130], start=180, end=360, fill=(60, 40, 20), width=8)
    draw.rounded_rectangle([55, 90, 201, 210], radius=18, fill=color)
    draw.rectangle([118, 120, 138, 135], fill=(200, 170, 60))


def mug(draw: ImageDraw.ImageDraw, color: tuple[int, int, int]) -> None:
    draw.ellipse([165, 100, 215, 170], outline=color, width=12)
    draw.rounded_rectangle([70, 70, 180, 210], radius=10, fill=color)
    draw.ellipse([70, 60, 180, 82], fill=tuple(max(0, c - 40) for c in color))


SHAPES = {"jacket": jacket, "t-shirt": tshirt, "sneakers": sneaker, "handbag": handbag,
          "mug": mug}

ITEMS = [
    ("nw-jacket-blue", "Northwind denim trucker jacket, blue", "Northwind", "jacket", "blue",
     "used", "58.00"),
    ("nw-jacket-blue-2", "Northwind trucker jacket in blue denim, size M", "Northwind", "jacket",
     "blue", "used", "64.50"),
    ("nw-jacket-black", "Northwind trucker jacket, black", "Northwind", "jacket", "black",
     "like new", "72.00"),
    ("ac-jacket-blue", "Acme Outfitters work jacket, blue", "Acme Outfitters", "jacket", "blue",
     "used", "49.99"),
    ("ac-jacket-brown", "Acme Outfitters canvas jacket, brown", "Acme Outfitters", "jacket",
     "brown", "used", "55.00"),
    ("ls-tee-red", "Larkspur logo tee, red", "Larkspur", "t-shirt", "red", "new", "18.00"),
    ("ls-tee-white", "Larkspur plain tee, white", "Larkspur", "t-shirt", "white", "used", "9.50"),
    ("ks-sneaker-white", "Kestrel court sneakers, white", "Kestrel", "sneakers", "white",
     "used", "42.00"),
    ("ks-sneaker-green", "Kestrel runner sneakers, green", "Kestrel", "sneakers", "green",
     "new", "85.00"),
    ("ls-bag-pink", "Larkspur mini handbag, pink", "Larkspur", "handbag", "pink", "like new",
     "120.00"),
    ("ac-bag-beige", "Acme Outfitters tote, beige canvas", "Acme Outfitters", "handbag", "beige",
     "used", "35.00"),
    ("nw-mug-green", "Northwind camp mug, green enamel", "Northwind", "mug", "green", "new",
     "14.00"),
]


def draw_item(category: str, color: str, seed: int) -> Image.Image:
    img = background(seed)
    SHAPES[category](ImageDraw.Draw(img), COLORS[color])
    return img.filter(ImageFilter.SMOOTH)


def main() -> None:
    images = HERE / "catalog" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed, (item_id, title, brand, category, color, condition, price) in enumerate(ITEMS):
        path = images / f"{item_id}.jpg"
        draw_item(category, color, seed).save(path, quality=85)
        rows.append({"id": item_id, "title": title, "brand": brand, "category": category,
                     "condition": condition, "price": price, "currency": "USD",
                     "image": f"images/{path.name}", "url": f"https://example.com/{item_id}"})
    with (HERE / "catalog" / "listings.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    # The sample photo: the first jacket again, re-shot slightly smaller and brighter.
    photo = draw_item("jacket", "blue", 0).resize((240, 240)).point(lambda v: min(255, v + 6))
    photo.save(HERE / "photo.jpg", quality=90)


if __name__ == "__main__":
    main()
