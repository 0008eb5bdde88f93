"""Value pools of the reading corpus: names, cities, email domains, items, brands and event words
of many locales (faker plus fixed lists), filtered to what the record families' patterns accept,
and the light noise (typos, spacing) the phrase grammar applies. No torch here."""

from __future__ import annotations

import random
import re
import unicodedata
from typing import Any

from dlmprompt.models.records import FAMILIES

LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT", "pt_BR", "nl_NL", "pl_PL", "sv_SE")


def _latin1_ok(s: str) -> bool:
    try:
        s.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


_REGEX = {fam: {f.name: re.compile(f.regex) for f in fields if f.regex} for fam, fields in FAMILIES.items()}


CATEGORIES = FAMILIES["product"][2].options


STATUSES = FAMILIES["order"][3].options


_REAL_CITIES = (
    "London",
    "Manchester",
    "Edinburgh",
    "Glasgow",
    "Bristol",
    "Leeds",
    "Dublin",
    "Cork",
    "Paris",
    "Lyon",
    "Marseille",
    "Toulouse",
    "Nantes",
    "Lille",
    "Bordeaux",
    "Nice",
    "Saint-Étienne",
    "Berlin",
    "Munich",
    "München",
    "Hamburg",
    "Köln",
    "Cologne",
    "Frankfurt",
    "Stuttgart",
    "Düsseldorf",
    "Leipzig",
    "Dresden",
    "Vienna",
    "Wien",
    "Zürich",
    "Geneva",
    "Genève",
    "Basel",
    "Bern",
    "Madrid",
    "Barcelona",
    "Sevilla",
    "Valencia",
    "Málaga",
    "Bilbao",
    "Zaragoza",
    "Lisbon",
    "Lisboa",
    "Porto",
    "Coimbra",
    "Rome",
    "Roma",
    "Milan",
    "Milano",
    "Naples",
    "Turin",
    "Torino",
    "Florence",
    "Bologna",
    "Venice",
    "Genoa",
    "Palermo",
    "Amsterdam",
    "Rotterdam",
    "Utrecht",
    "Eindhoven",
    "The Hague",
    "Groningen",
    "Brussels",
    "Antwerp",
    "Ghent",
    "Liège",
    "Warsaw",
    "Kraków",
    "Krakow",
    "Gdansk",
    "Wroclaw",
    "Poznan",
    "Lublin",
    "Stockholm",
    "Göteborg",
    "Gothenburg",
    "Malmö",
    "Uppsala",
    "Oslo",
    "Bergen",
    "Copenhagen",
    "Aarhus",
    "Helsinki",
    "Tampere",
    "Prague",
    "Brno",
    "Budapest",
    "Athens",
    "Thessaloniki",
    "Bucharest",
    "Sofia",
    "Zagreb",
    "Ljubljana",
    "New York",
    "Boston",
    "Chicago",
    "Seattle",
    "Austin",
    "Denver",
    "San Francisco",
    "Los Angeles",
    "San Diego",
    "Portland",
    "Atlanta",
    "Miami",
    "Houston",
    "Dallas",
    "Phoenix",
    "Philadelphia",
    "Pittsburgh",
    "Detroit",
    "Minneapolis",
    "St. Louis",
    "Nashville",
    "New Orleans",
    "Toronto",
    "Montréal",
    "Montreal",
    "Vancouver",
    "Ottawa",
    "Calgary",
    "Québec",
    "São Paulo",
    "Rio de Janeiro",
    "Curitiba",
    "Brasília",
    "Salvador",
    "Recife",
    "Buenos Aires",
    "Córdoba",
    "Mexico City",
    "Guadalajara",
    "Bogotá",
    "Medellín",
    "Lima",
    "Santiago",
    "Montevideo",
    "Sydney",
    "Melbourne",
    "Brisbane",
    "Perth",
    "Auckland",
    "Wellington",
    "Tokyo",
    "Osaka",
    "Kyoto",
    "Seoul",
    "Busan",
    "Singapore",
    "Mumbai",
    "Bangalore",
    "Delhi",
    "Cape Town",
    "Johannesburg",
    "Nairobi",
    "Lagos",
    "Accra",
    "Cairo",
    "Casablanca",
    "Istanbul",
    "Ankara",
    "Tel Aviv",
    "Dubai",
    "Reykjavík",
    "Tallinn",
    "Riga",
    "Vilnius",
    "Luxembourg",
    "Monaco",
    "Salzburg",
    "Innsbruck",
    "Graz",
    "Lausanne",
    "Bremen",
    "Hannover",
    "Nürnberg",
    "Aachen",
    "Heidelberg",
    "Freiburg",
    "Strasbourg",
    "Montpellier",
    "Rennes",
    "Grenoble",
    "Granada",
    "Alicante",
    "Palma",
    "Verona",
    "Pisa",
    "Bari",
    "Trieste",
    "Faro",
    "Braga",
    "Haarlem",
    "Leiden",
    "Delft",
    "Västerås",
    "Örebro",
    "Linköping",
    "Umeå",
    "Łódź",
    "Kyiv",
    "Oxford",
    "Cambridge",
)


REAL_CITIES = tuple(c for c in _REAL_CITIES if _latin1_ok(c) and re.fullmatch(FAMILIES["person"][3].regex or "", c))


_SYL_ON = (
    "b",
    "br",
    "c",
    "ch",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "kl",
    "l",
    "m",
    "n",
    "p",
    "pr",
    "r",
    "s",
    "sh",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
    "th",
    "",
)


_SYL_NU = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "ia", "y", "é", "ö", "ä", "ü", "å", "ø")


_SYL_CO = ("", "", "n", "r", "l", "s", "k", "m", "th", "x", "nd", "rk", "lt", "ss", "v")


_EMAIL_DOMAINS = (
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "proton.me",
    "protonmail.com",
    "aol.com",
    "mail.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "t-online.de",
    "orange.fr",
    "free.fr",
    "laposte.net",
    "wanadoo.fr",
    "libero.it",
    "virgilio.it",
    "tiscali.it",
    "wp.pl",
    "onet.pl",
    "o2.pl",
    "interia.pl",
    "telia.se",
    "bredband.net",
    "ziggo.nl",
    "kpnmail.nl",
    "xs4all.nl",
    "uol.com.br",
    "bol.com.br",
    "terra.com.br",
    "btinternet.com",
    "sky.com",
    "yahoo.co.uk",
    "live.co.uk",
    "fastmail.com",
    "hey.com",
    "example.org",
    "example.com",
    "example.net",
    "posteo.de",
    "seznam.cz",
    "yandex.com",
    "university.edu",
    "mit.edu",
    "ox.ac.uk",
    "uni-hamburg.de",
    "kth.se",
    "polimi.it",
    "uva.nl",
)


_TLDS = ("com", "org", "net", "io", "de", "fr", "it", "es", "nl", "pl", "se", "co.uk", "com.br", "eu")


_ITEMS = (
    "Lamp",
    "Kettle",
    "Novel",
    "Drone",
    "Ball",
    "Jacket",
    "Guitar",
    "Shovel",
    "Puzzle",
    "Speaker",
    "Blender",
    "Racket",
    "Toaster",
    "Backpack",
    "Headphones",
    "Keyboard",
    "Mouse",
    "Monitor",
    "Tent",
    "Bicycle",
    "Skateboard",
    "Teapot",
    "Wok",
    "Knife Set",
    "Rake",
    "Hose",
    "Planter",
    "Board Game",
    "Doll",
    "Robot",
    "Sweater",
    "Sneakers",
    "Scarf",
    "Vinyl",
    "Ukulele",
    "Drum Kit",
    "Notebook",
    "Atlas",
    "Cookbook",
    "Charger",
    "Tablet",
    "Watch",
    "Camera",
    "Yoga Mat",
    "Dumbbells",
    "Helmet",
    "Frying Pan",
    "Mug",
)


_BRANDS = (
    "Acme",
    "Nordic",
    "Zenith",
    "Aero",
    "Lumo",
    "Vela",
    "Orbit",
    "Kiro",
    "Brio",
    "Solis",
    "Terra",
    "Pico",
    "Nova",
    "Atlas",
    "Fjord",
    "Alba",
    "Mistral",
    "Quantum",
    "Echo",
    "Polar",
)


CAT_WORDS = {
    "books": ("books", "book", "Books"),
    "electronics": ("electronics", "Electronics"),
    "garden": ("garden", "Garden"),
    "kitchen": ("kitchen", "Kitchen"),
    "sports": ("sports", "Sports"),
    "toys": ("toys", "Toys"),
    "clothing": ("clothing", "Clothing"),
    "music": ("music", "Music"),
}


_EVENT_KINDS = (
    "Summit",
    "Festival",
    "Meetup",
    "Conference",
    "Fair",
    "Workshop",
    "Expo",
    "Forum",
    "Days",
    "Hackathon",
    "Symposium",
    "Marathon",
    "Gala",
    "Concert",
    "Week",
    "Camp",
    "Congress",
    "Show",
)


_EVENT_TOPICS = (
    "Data",
    "Jazz",
    "Python",
    "Food",
    "Wine",
    "Film",
    "Design",
    "Robotics",
    "Climate",
    "Book",
    "Open Source",
    "Cloud",
    "Health",
    "Photography",
    "Chess",
    "Coffee",
    "Startup",
    "Poetry",
    "Science",
    "Game",
    "Rust",
    "Art",
    "Music",
    "Ocean",
    "Space",
    "Craft Beer",
    "Vintage Car",
)


RELATIONS = (
    "sister",
    "brother",
    "mother",
    "father",
    "colleague",
    "friend",
    "neighbour",
    "neighbor",
    "manager",
    "cousin",
    "partner",
    "roommate",
    "boss",
    "mentor",
    "daughter",
    "son",
    "aunt",
    "uncle",
)


def _latin1(s: str) -> bool:
    try:
        s.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _ascii(s: str) -> str:
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", s.lower())


class Pools:
    """Faker in many locales plus hand lists and invented words; one ``random.Random`` drives choice."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fakers = []
        for i, loc in enumerate(LOCALES):
            f = Faker(loc)
            f.seed_instance(seed * 100 + i)
            self.fakers.append(f)

    def fake(self) -> Any:
        return self.rng.choice(self.fakers)

    def invented(self, syllables: int | None = None) -> str:
        r = self.rng
        n = syllables or r.choice((1, 2, 2, 2, 3))
        w = "".join(
            r.choice(_SYL_ON) + (r.choice(_SYL_NU) if r.random() < 0.15 else r.choice(_SYL_NU[:10])) + r.choice(_SYL_CO)
            for _ in range(n)
        )
        w = w[:1].upper() + w[1:]
        return w if len(w) >= 3 else w + "ra"

    def _pick(self, make: Any, regex: Any, tries: int = 20) -> str:
        for _ in range(tries):
            v = make().strip()
            if v and _latin1(v) and regex.fullmatch(v):
                return v
        raise RuntimeError("no value matched")

    def first_last(self) -> tuple[str, str]:
        r = self.rng
        while True:
            x = r.random()
            if x < 0.2:
                first, last = self.invented(), self.invented()
            else:
                f = self.fake()
                first, last = f.first_name(), f.last_name()
                if x < 0.3:
                    last = self.invented()
            name = f"{first} {last}"
            if _latin1(name) and _REGEX["person"]["name"].fullmatch(name):
                return first, last

    def person_name(self) -> tuple[str, str, str]:
        first, last = self.first_last()
        r = self.rng.random()
        if r < 0.08:
            mid = self.rng.choice("ABCDEFGHJKLMNOPRSTW") + "."
            return f"{first} {mid} {last}", first, last
        if r < 0.12:
            return f"{first} {self.first_last()[0]} {last}", first, last
        return f"{first} {last}", first, last

    def city(self) -> str:
        if self.rng.random() < 0.45:
            return self.rng.choice(REAL_CITIES)
        if self.rng.random() < 0.15:
            return self.invented() + self.rng.choice(("", "", "burg", "ville", "by", "ton", " Falls"))
        return self._pick(lambda: self.fake().city(), _REGEX["person"]["city"])

    def email(self, first: str | None = None, last: str | None = None) -> str:
        r = self.rng
        dom = r.choice(_EMAIL_DOMAINS) if r.random() < 0.75 else self._domain()
        if first and last and r.random() < 0.8:
            fi, la = _ascii(first) or "ann", _ascii(last) or "lee"
            local = r.choice(
                (
                    f"{fi}.{la}",
                    f"{fi}.{la}",
                    f"{fi[0]}.{la}",
                    f"{fi}{la}",
                    f"{fi}_{la}",
                    f"{fi}{r.randint(1, 99)}",
                    f"{la}.{fi}",
                    f"{fi[0]}{la}",
                    f"{fi}-{la}",
                    f"{la}{r.randint(1950, 2009)}",
                    f"{fi}",
                    f"{fi}.{la}{r.randint(1, 9)}",
                )
            )
        else:
            local = _ascii(self.fake().user_name()) or _ascii(self.invented())
        return f"{local}@{dom}"

    def _domain(self) -> str:
        r = self.rng
        base = _ascii(self.invented()) if r.random() < 0.5 else _ascii(self.fake().last_name())
        return f"{base or 'mail'}.{r.choice(_TLDS)}"

    def company(self) -> str:
        r = self.rng
        rx = _REGEX["company"]["name"]
        x = r.random()
        if x < 0.35:
            return self.invented() + r.choice(
                (
                    " Labs",
                    " Systems",
                    " GmbH",
                    " AB",
                    " Ltd",
                    " Inc",
                    " SA",
                    " BV",
                    " Group",
                    " & Co",
                    " Robotics",
                    "",
                    " Studio",
                    " Foods",
                    " Energy",
                )
            )
        return self._pick(lambda: self.fake().company(), rx)

    def product(self) -> str:
        r = self.rng
        x = r.random()
        if x < 0.35:
            color = (
                self.fake().color_name() if r.random() < 0.5 else r.choice(("Red", "Blue", "Black", "Silver", "Green"))
            )
            name = f"{color} {r.choice(_ITEMS)}"
        elif x < 0.65:
            name = f"{r.choice(_BRANDS)} {r.choice(_ITEMS)}"
            if r.random() < 0.4:
                name += f" {r.choice(('X', 'Pro', 'Mini', 'Max', 'S', 'Air', ''))}{r.randint(1, 900)}".rstrip()
        elif x < 0.85:
            name = f"{self.invented()} {r.choice(_ITEMS)}"
        else:
            name = f"{self.invented()} {self.invented(1)} {r.randint(2, 99)}0"
        return name if _REGEX["product"]["name"].fullmatch(name) and _latin1(name) else "Acme Lamp"

    def event_title(self) -> str:
        r = self.rng
        x = r.random()
        if x < 0.3:
            words = self.fake().words(nb=r.randint(1, 2))
            t = " ".join(w.capitalize() for w in words) + " " + r.choice(_EVENT_KINDS)
        elif x < 0.6:
            t = f"{r.choice(_EVENT_TOPICS)} {r.choice(_EVENT_KINDS)}"
            if r.random() < 0.4:
                t = f"{self.city_word()} {t}"
        elif x < 0.8:
            t = f"{self.invented()} {r.choice(_EVENT_KINDS)}"
        else:
            t = f"{r.choice(_EVENT_TOPICS)} {r.choice(_EVENT_KINDS)} {r.randint(2015, 2030)}"
        t = t.replace("’", "'")
        return t if _REGEX["event"]["title"].fullmatch(t) and _latin1(t) else "Data Summit"

    def city_word(self) -> str:
        c = self.rng.choice(REAL_CITIES)
        return c.split()[0]

    def date(self) -> str:
        r = self.rng
        return f"{r.randint(2019, 2030)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


_FILLER = re.compile(r"[A-Za-z]{4,}")


def _typo(word: str, r: random.Random) -> str:
    i = r.randrange(1, len(word) - 1)
    k = r.random()
    if k < 0.4:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if k < 0.7:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def noisy(literal: str, r: random.Random, level: float) -> str:
    """Light noise on template words (never on values): typos, doubled spaces."""
    if level <= 0 or not literal:
        return literal
    if r.random() < level:
        words = list(_FILLER.finditer(literal))
        if words:
            m = r.choice(words)
            literal = literal[: m.start()] + _typo(m.group(), r) + literal[m.end() :]
    if r.random() < level and " " in literal:
        idx = [i for i, c in enumerate(literal) if c == " "]
        i = r.choice(idx)
        literal = literal[:i] + "  " + literal[i + 1 :]
    return literal


def fill(template: str, values: dict[str, Any], r: random.Random, level: float) -> str:
    """Format ``template`` ({field} placeholders), noising only the literal parts."""
    parts = re.split(r"(\{[a-z_]+\})", template)
    out = []
    for p in parts:
        if p.startswith("{") and p.endswith("}"):
            out.append(str(values[p[1:-1]]))
        else:
            out.append(noisy(p, r, level))
    return "".join(out)
