"""Out-of-distribution extraction documents for the embedded default model. NEVER trained on.

Two parts, each document ``{"family", "text", "values", "source"}`` with its gold values:

* ``generated``: a small generator written by hand for this purpose, with its own templates, wording
  and value lists (not the training grammar of ``dlmprompt.models.corpus`` nor ``train._PROSE``);
* ``handwritten``: sentences written one by one.

Every string value appears verbatim in its text (dates in ISO form, categories and statuses as their
word), so a model that reads and copies can score; ``tests/test_corpus.py`` checks that none of these
templates is produced by the training grammar.

    python benchmarks/ood_extraction.py [--write benchmarks/data/ood_extraction.jsonl]
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

OOD_SEED = 20260101
DATA_FILE = Path(__file__).parent / "data" / "ood_extraction.jsonl"

# ----------------------------------------------------------------------------- value lists

FIRST = (
    "Ingrid",
    "Tomasz",
    "Aurélie",
    "Kwame",
    "Mei",
    "Rafael",
    "Siobhan",
    "Dmitri",
    "Leilani",
    "Henrik",
    "Beatriz",
    "Oluwaseun",
    "Giulia",
    "Mateus",
    "Annelies",
    "Yusuf",
    "Freya",
    "Ignacio",
    "Noémie",
    "Bartosz",
    "Priya",
    "Lorenzo",
    "Astrid",
    "Callum",
    "Inès",
    "Jürgen",
    "Camila",
    "Théo",
    "Wiebke",
    "Rosalind",
)
LAST = (
    "Halvorsen",
    "Jankowski",
    "Delacroix",
    "Mensah",
    "Takahashi",
    "Barros",
    "O'Connell",
    "Volkov",
    "Kahale",
    "Sundqvist",
    "Figueira",
    "Adeyemi",
    "Conti",
    "Lindqvist",
    "Van Dijk",
    "Demir",
    "Ashworth",
    "Ibáñez",
    "Lefèvre",
    "Nowicki",
    "Raman",
    "Moretti",
    "Berg",
    "MacLeod",
    "Benali",
    "Krüger",
    "Restrepo",
    "Marchand",
    "Hoekstra",
    "Pemberton",
)
CITIES = (
    "Trondheim",
    "Gdynia",
    "Aix-en-Provence",
    "Kumasi",
    "Sapporo",
    "Belo Horizonte",
    "Galway",
    "Kazan",
    "Honolulu",
    "Göteborg",
    "Braga",
    "Ibadan",
    "Perugia",
    "Uppsala",
    "Maastricht",
    "Izmir",
    "Norwich",
    "Salamanca",
    "Besançon",
    "Turku",
    "Chennai",
    "Bergamo",
    "Tromsø",
    "Inverness",
    "Oran",
    "Würzburg",
    "Cartagena",
    "Nancy",
    "Zwolle",
    "Bath",
    "Lyon",
    "Boston",
    "Kraków",
    "Lisbon",
    "Melbourne",
    "Zürich",
)
DOMAINS = (
    "fastmail.fm",
    "posteo.net",
    "northwind.io",
    "kleinhaus.de",
    "mail.ee",
    "uni-bonn.de",
    "hospital.org",
    "studio-nord.se",
    "zoho.com",
    "tutanota.com",
    "outlook.fr",
    "atelier.it",
)
COMPANIES = (
    "Fjordline Analytics",
    "Brightwater & Sons",
    "Kestrel Biotech",
    "Maison Verlaine",
    "Osprey Freight",
    "Tannenbaum Werke",
    "Lumen Optics",
    "Quintana Hermanos",
    "Bluefin Software",
    "Castelnuovo Vini",
    "Halcyon Health",
    "Norrsken Energi",
    "Cobalt Ridge Mining",
    "Papeterie Dufour",
    "Zeeland Dairy",
)
PRODUCTS = (
    "Trailblazer Headlamp",
    "Cedar Cutting Board",
    "Aurora Desk Fan",
    "Falcon Tennis Racket",
    "Mosaic Jigsaw",
    "Harbor Raincoat",
    "Pixel Smart Plug",
    "Sequoia Bird Feeder",
    "Tempo Metronome",
    "Kodiak Thermos",
    "Wren Paperback Set",
    "Comet Kite",
    "Granite Pestle",
    "Velvet Hoodie",
    "Echo Bluetooth Dock",
)
EVENTS = (
    "Harbour Lights Festival",
    "Midsummer Code Sprint",
    "Alpine Film Nights",
    "Nordic Bread Fair",
    "Quantum Computing Colloquium",
    "Street Chess Open",
    "Autumn Pottery Market",
    "Deep Sea Lecture Series",
    "Retro Gaming Weekend",
    "Urban Gardening Day",
    "Baroque Music Evenings",
    "Robot Football Cup",
)

# ----------------------------------------------------------------------------- templates (OOD only)

OOD_TEMPLATES: dict[str, tuple[str, ...]] = {
    "person": (
        "Attendee card -- {name} ({age}), travelling from {city}; replies go to {email}.",
        "Had coffee with {name}; at {age} they already run a lab in {city}. Ping {email}.",
        "{city} resident {name}, {age}, signed the petition (contact {email}).",
        "Reviewer: {name} | years on this planet: {age} | hometown {city} | inbox {email}",
        "The applicant, {name}, states an age of {age} and a residence in {city}. Correspondence: {email}",
        "Spotted at the conference: {name}, who gave {email} as contact, is {age} and commutes from {city}.",
        "Patient {name} (aged {age}) was referred from {city}. Portal login: {email}.",
        "New tenant {name} signed today: age {age}, previous address in {city}, reachable by {email}.",
        "{name} - {age} - {city} - {email} (volunteer roster)",
        "Thanks to {name} from {city}, our {age}-year-old winner! Questions: {email}",
        "Speaker bio: {name} is {age}, lives near {city} and answers mail at {email}.",
        "According to the form, {name} is {age} and based out of {city}; the address on file is {email}.",
    ),
    "company": (
        "Company profile. {name} opened for business in {founded}, keeps {employees} people on staff"
        " and is run from {city}.",
        "Supplier {name} ({city}) -- since {founded} -- workforce of {employees}.",
        "With {employees} workers and roots going back to {founded}, {name} remains a fixture of {city}.",
        "Our partner {name}, born in {founded} in {city}, today counts {employees} staff members.",
        "Registry entry: {name}; incorporated {founded}; head office {city}; personnel {employees}.",
        "Back in {founded} a small shop called {name} appeared in {city}. Now it has {employees} employees.",
        "{name} is a {city} firm dating from {founded} with some {employees} people.",
        "Fact sheet: {name} / est. in {founded} / {employees} on payroll / seat: {city}",
    ),
    "product": (
        "Bargain alert: the {name} is down to {price} dollars in our {category} shop.",
        "Item {name} -- aisle {category} -- sticker price ${price}.",
        "Customers love the {name}; grab it for {price} (department: {category}).",
        "Catalogue line: {name}, {category}, ${price} each.",
        "You will find the {name} among {category} products, tagged at {price}.",
        "Restocked! {name} for ${price}. Filed in {category}.",
        "The {category} team recommends the {name} at a friendly {price} USD.",
        "Listing #{junk}: {name} -- unit price {price} -- section {category}",
    ),
    "order": (
        "Shipment notice: {order_id} for {customer} with {quantity} parcels is {status}.",
        "Hello {customer}, the {quantity} items from {order_id} are now {status}.",
        "Ticket regarding {order_id}: buyer {customer}, amount {quantity}, current state {status}.",
        "Warehouse log -- {order_id} -- {quantity} crates -- consignee {customer} -- {status}",
        "We confirm that order {order_id} ({quantity} articles, customer {customer}) is {status}.",
        "{customer} asked about {order_id}; it holds {quantity} products and shows as {status}.",
        "Invoice {order_id} / client {customer} / {quantity} pcs / {status}",
        "Good news, {customer}: your {quantity} things under {order_id} have been {status}.",
    ),
    "event": (
        "Mark your calendars: the {title} happens on {date} in {city}.",
        "{city} will host {title} -- date {date}, doors at nine.",
        "Reminder for {date}: {title}, downtown {city}.",
        "Programme note: {title} runs in {city}, first day {date}.",
        "Everyone is invited to {title}! Where: {city}. When: {date}.",
        "After a long pause, {title} is back, this time in {city} on {date}.",
        "Calendar item -- {date} -- {title} -- venue city {city}",
        "The {title} ({date}) moves to {city} this year.",
    ),
}
CATEGORY_OPTIONS = ("books", "electronics", "garden", "kitchen", "sports", "toys", "clothing", "music")
STATUS_OPTIONS = ("pending", "shipped", "delivered", "cancelled")


def _email(first: str, last: str, r: random.Random) -> str:
    import unicodedata

    def a(s: str) -> str:
        s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower()
        return "".join(c for c in s if c.isalnum())

    fn, ln = a(first), a(last)
    for _ in range(20):  # short enough for the email slot
        local = r.choice((f"{fn}.{ln}", f"{fn[0]}{ln}", f"{ln}.{fn}", f"{fn}{r.randint(1, 99)}"))
        email = f"{local}@{r.choice(DOMAINS)}"
        if len(email) <= 22:
            break
    return email


def _generated(n: int, seed: int) -> list[dict[str, Any]]:
    r = random.Random(seed)
    fams = list(OOD_TEMPLATES)
    out = []
    for i in range(n):
        fam = fams[i % len(fams)]
        tmpl = OOD_TEMPLATES[fam][(i // len(fams)) % len(OOD_TEMPLATES[fam])]
        if fam == "person":
            first, last = r.choice(FIRST), r.choice(LAST)
            while len(first + last) > 14:
                first, last = r.choice(FIRST), r.choice(LAST)
            v = {
                "name": f"{first} {last}",
                "age": r.randint(19, 88),
                "email": _email(first, last, r),
                "city": r.choice(CITIES),
            }
        elif fam == "company":
            v = {
                "name": r.choice(COMPANIES),
                "founded": r.randint(1870, 2022),
                "employees": r.randint(3, 90000),
                "city": r.choice(CITIES),
            }
        elif fam == "product":
            v = {
                "name": r.choice(PRODUCTS),
                "price": f"{r.randint(2, 800)}.{r.choice((0, 49, 95, 99, r.randint(1, 98))):02d}",
                "category": r.choice(CATEGORY_OPTIONS),
            }
        elif fam == "order":
            v = {
                "order_id": f"ORD-{r.randint(0, 999999):06d}",
                "customer": r.choice([f"{a} {b}" for a in FIRST for b in LAST if len(a + b) <= 14]),
                "quantity": r.randint(1, 60),
                "status": r.choice(STATUS_OPTIONS),
            }
        else:
            v = {
                "title": r.choice(EVENTS),
                "date": f"{r.randint(2024, 2028)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
                "city": r.choice(CITIES),
            }
        text = tmpl.format(**v, junk=r.randint(100, 999))
        out.append({"family": fam, "text": text, "values": v, "source": "generated"})
    return out


def _p(name: str, age: int, email: str, city: str) -> dict[str, Any]:
    return {"name": name, "age": age, "email": email, "city": city}


HANDWRITTEN: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "person",
        "Meet Ada Lovelace, 36, from London (email: ada.lovelace@example.org).",
        _p("Ada Lovelace", 36, "ada.lovelace@example.org", "London"),
    ),
    (
        "person",
        "Grace Hopper is 85 and still lives in Arlington. Her old address grace.hopper@navy.mil works.",
        _p("Grace Hopper", 85, "grace.hopper@navy.mil", "Arlington"),
    ),
    (
        "person",
        "Hi, I'm Lars Eriksson, 29, a nurse in Malmö - drop me a note at lars.eriksson@telia.se",
        _p("Lars Eriksson", 29, "lars.eriksson@telia.se", "Malmö"),
    ),
    (
        "person",
        "Our club welcomes Zoë Martin (47), who recently relocated to Québec. Write to zoe.martin@videotron.ca.",
        _p("Zoë Martin", 47, "zoe.martin@videotron.ca", "Québec"),
    ),
    (
        "person",
        "José Núñez turned 52 in March. He moved from Sevilla and his email is jnunez@correo.es.",
        _p("José Núñez", 52, "jnunez@correo.es", "Sevilla"),
    ),
    (
        "person",
        "Emergency form: Katarzyna Nowak, age 33, city Poznan, e-mail kasia.nowak@onet.pl. Her son Piotr is 6.",
        _p("Katarzyna Nowak", 33, "kasia.nowak@onet.pl", "Poznan"),
    ),
    (
        "company",
        "Acme Robotics was started in 1998 in Eindhoven and now has 420 employees.",
        {"name": "Acme Robotics", "founded": 1998, "employees": 420, "city": "Eindhoven"},
    ),
    (
        "company",
        "Nobody expected Blue Heron Coffee, founded in 2011 in Portland, to grow to 1800 baristas.",
        {"name": "Blue Heron Coffee", "founded": 2011, "employees": 1800, "city": "Portland"},
    ),
    (
        "company",
        "The Bergström Group traces its history to 1921; its Stockholm head office oversees 9500 people.",
        {"name": "Bergström Group", "founded": 1921, "employees": 9500, "city": "Stockholm"},
    ),
    (
        "company",
        "Papelería Ruiz, a family business from Valencia since 1964, employs 37 people.",
        {"name": "Papelería Ruiz", "founded": 1964, "employees": 37, "city": "Valencia"},
    ),
    (
        "product",
        "The Storm Umbrella sells for $24.99 in the clothing section.",
        {"name": "Storm Umbrella", "price": "24.99", "category": "clothing"},
    ),
    (
        "product",
        "I bought a Whisper Blender for 89.00 dollars - it's filed under kitchen on the website.",
        {"name": "Whisper Blender", "price": "89.00", "category": "kitchen"},
    ),
    (
        "product",
        "Kids adore the Rocket Puzzle (toys), which costs just 12.50.",
        {"name": "Rocket Puzzle", "price": "12.50", "category": "toys"},
    ),
    (
        "product",
        "Deal of the day in electronics: Nimbus Earbuds, 59.95 USD, 4 colours available.",
        {"name": "Nimbus Earbuds", "price": "59.95", "category": "electronics"},
    ),
    (
        "order",
        "Order ORD-004211 placed by Hannah Schmidt contains 3 books and has shipped... status: shipped.",
        {"order_id": "ORD-004211", "customer": "Hannah Schmidt", "quantity": 3, "status": "shipped"},
    ),
    (
        "order",
        "Sorry Pedro Alves, ORD-918273 (12 items) was cancelled because the card was declined.",
        {"order_id": "ORD-918273", "customer": "Pedro Alves", "quantity": 12, "status": "cancelled"},
    ),
    (
        "order",
        "Still pending: ORD-550019, 7 units, requested by Chloé Dubois on Monday.",
        {"order_id": "ORD-550019", "customer": "Chloé Dubois", "quantity": 7, "status": "pending"},
    ),
    (
        "order",
        "Ahmed Khan's parcel ORD-120045 with 2 boxes was delivered to the front desk.",
        {"order_id": "ORD-120045", "customer": "Ahmed Khan", "quantity": 2, "status": "delivered"},
    ),
    (
        "event",
        "PyData Amsterdam is on 2025-10-14 this year; tickets go fast.",
        {"title": "PyData Amsterdam", "date": "2025-10-14", "city": "Amsterdam"},
    ),
    (
        "event",
        "Save the evening of 2026-02-07 for the Winter Jazz Night at the old harbour in Hamburg.",
        {"title": "Winter Jazz Night", "date": "2026-02-07", "city": "Hamburg"},
    ),
    (
        "event",
        "The Lisbon Marathon starts at 8 am on 2025-12-07, rain or shine, in Lisbon.",
        {"title": "Lisbon Marathon", "date": "2025-12-07", "city": "Lisbon"},
    ),
    (
        "event",
        "On 2027-05-20 Bologna hosts the Open Hardware Summit for the third time.",
        {"title": "Open Hardware Summit", "date": "2027-05-20", "city": "Bologna"},
    ),
)


def handwritten() -> list[dict[str, Any]]:
    return [{"family": f, "text": t, "values": dict(v), "source": "handwritten"} for f, t, v in HANDWRITTEN]


def ood_documents(n_generated: int = 120, seed: int = OOD_SEED) -> list[dict[str, Any]]:
    """The OOD set: ``n_generated`` generated documents (families in turn) then the hand-written ones."""
    return _generated(n_generated, seed) + handwritten()


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", default=None, help="write the set as JSON lines here")
    ap.add_argument("--n", type=int, default=120)
    args = ap.parse_args(argv)
    docs = ood_documents(args.n)
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        with open(args.write, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    else:
        for d in docs:
            print(json.dumps(d, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
