"""The "read and copy" training corpus of the embedded default model.

A phrase grammar per record family (person, company, product, order, event) that composes many
phrasings, clause orders, labels, punctuation, distractor entities and numbers, and light noise, with
values drawn from wide pools (faker in many locales, real cities, invented names), so that the model
learns to *find and copy* a value from the text rather than to recall a memorised one. Also: plain
span-copying sequences and small Python methods (``def add(self, other): return self.x + other.x``).

Every value appears verbatim in its text and matches its field's regex (``records.FAMILIES``); noise
(extra spaces, typos, line breaks) only touches the words around values. Reproducible from a seed.

The out-of-distribution evaluation set (``benchmarks/ood_extraction.py``) is written separately, with
other templates and wording; it is never trained on.
"""

from __future__ import annotations

import random
import re
from typing import Any

from dlmprompt.models.corpus_pools import CAT_WORDS, CATEGORIES, RELATIONS, STATUSES, Pools, fill
from dlmprompt.models.records import FAMILIES

PERSON_LEAD = (
    "{name} is {age} years old",
    "{name} is {age}",
    "{name}, {age},",
    "{name} ({age})",
    "{name}, aged {age},",
    "{name}, age {age},",
    "Meet {name}, {age},",
    "This is {name}, {age}",
    "{name} turned {age} this year",
    "{name}, a {age}-year-old engineer,",
    "{name} (age {age})",
    "Say hello to {name}, {age}",
    "Our new member {name}, {age},",
    "{name} - {age} -",
    "{name} just turned {age}",
    "At {age}, {name}",
    "{name}, who is {age},",
    "Meet {name} ({age})",
    "Welcome {name}, {age} years young,",
    "{name}, {age} y/o,",
    "{name}, now {age},",
    "{name} is a {age} year old designer",
)


PERSON_CITY = (
    "lives in {city}",
    "is from {city}",
    "comes from {city}",
    "is based in {city}",
    "from {city}",
    "moved to {city} last year",
    "resides in {city}",
    "lives and works in {city}",
    "grew up in {city}",
    "has settled in {city}",
    "calls {city} home",
    "is living in {city}",
    "works out of {city}",
)


PERSON_EMAIL = (
    "You can reach {first} at {email}",
    "write to {email}",
    "email: {email}",
    "e-mail {email}",
    "Contact: {email}",
    "reach out via {email}",
    "mail {email}",
    "{first}'s address is {email}",
    "Email {email}",
    "send a note to {email}",
    "their inbox is {email}",
    "contact {first} at {email}",
    "E-mail - {email}",
    "drop a line to {email}",
    "(email: {email})",
    "<{email}>",
    "email address: {email}",
)


PERSON_LABELS = {
    "name": ("Name", "Full name", "NAME", "Person", "Contact", "Who", "name"),
    "age": ("Age", "AGE", "Age (years)", "Years", "age"),
    "email": ("Email", "E-mail", "Mail", "EMAIL", "e-mail", "Email address", "Contact email"),
    "city": ("City", "Location", "Lives in", "Home town", "Town", "Based in", "CITY", "city"),
}


COMPANY_LEAD = (
    "{name} was founded in {founded}",
    "{name}, founded in {founded},",
    "Since {founded}, {name}",
    "{name} (est. {founded})",
    "Founded in {founded}, {name}",
    "{name} started in {founded}",
    "{name} has been around since {founded}",
    "{name}, established {founded},",
    "In {founded}, {name} was born",
    "{name} opened its doors in {founded}",
    "{name} dates back to {founded}",
    "{name} (founded {founded})",
    "The firm {name}, set up in {founded},",
    "{name} was incorporated in {founded}",
)


COMPANY_CITY = (
    "is headquartered in {city}",
    "is based in {city}",
    "has its head office in {city}",
    "operates from {city}",
    "is located in {city}",
    "calls {city} home",
    "HQ: {city}",
    "sits in {city}",
    "is run from {city}",
    "has its base in {city}",
    "with headquarters in {city}",
)


COMPANY_EMP = (
    "employs {employees} people",
    "has {employees} employees",
    "has a staff of {employees}",
    "counts {employees} workers",
    "now has {employees} staff",
    "has a headcount of {employees}",
    "reports {employees} employees",
    "has {employees} people on board",
    "employs a team of {employees}",
    "keeps {employees} people busy",
    "has grown to {employees} staff",
    "has {employees} on the payroll",
)


COMPANY_LABELS = {
    "name": ("Company", "Name", "Firm", "Organisation", "Organization", "Employer", "COMPANY"),
    "founded": ("Founded", "Established", "Est.", "Year founded", "Since", "FOUNDED"),
    "employees": ("Employees", "Staff", "Headcount", "Team size", "Workforce", "EMPLOYEES"),
    "city": ("City", "HQ", "Headquarters", "Location", "Based in", "Head office"),
}


PRODUCT_LEAD = (
    "The {name} costs ${price}",
    "{name} - ${price}",
    "{name}: {price} USD",
    "Buy the {name} for ${price}",
    "{name}, now only {price} dollars",
    "The {name} is on sale for ${price}",
    "{name} at ${price}",
    "Get the {name} for just {price} EUR",
    "{name} (${price})",
    "Our {name} sells for {price}",
    "{name} is priced at ${price}",
    "{name} retails for {price} USD",
    "Price of the {name}: ${price}",
    "For ${price} you get the {name}",
    "{name} | ${price}",
    "{name} — {price} €",
    "{name} for £{price}",
)


PRODUCT_CAT = (
    "listed under {cat}",
    "in our {cat} section",
    "category: {cat}",
    "filed in {cat}",
    "({cat})",
    "find it in {cat}",
    "part of the {cat} range",
    "in the {cat} department",
    "shelved under {cat}",
    "a {cat} item",
    "from the {cat} aisle",
    "category {cat}",
    "under {cat}",
)


PRODUCT_LABELS = {
    "name": ("Product", "Item", "Name", "Article", "PRODUCT", "Model"),
    "price": ("Price", "Cost", "PRICE", "Price (USD)", "Now", "Sale price"),
    "category": ("Category", "Dept", "Department", "Section", "CATEGORY", "Aisle"),
}


ORDER_LEAD = (
    "Order {order_id} for {customer}",
    "{customer} placed order {order_id}",
    "Order {order_id} ({customer})",
    "{customer}'s order {order_id}",
    "Your order {order_id}, {customer},",
    "Order no. {order_id} by {customer}",
    "Re: {order_id} - {customer}",
    "{customer} ordered under {order_id}",
    "Hi {customer}, order {order_id}",
    "Order {order_id}, placed by {customer},",
    "Dear {customer}, your order {order_id}",
    "Customer {customer}, reference {order_id}",
    "{order_id} / {customer}",
)


ORDER_QTY = (
    "{quantity} items",
    "contains {quantity} items",
    "{quantity} units",
    "quantity {quantity}",
    "qty: {quantity}",
    "{quantity} pieces",
    "x{quantity}",
    "for {quantity} boxes",
    "{quantity} pcs",
    "with {quantity} articles",
    "a total of {quantity} items",
    "{quantity} packages",
)


ORDER_STATUS = (
    "status {status}",
    "it is {status}",
    "is now {status}",
    "has been {status}",
    "status: {status}",
    "currently {status}",
    "marked as {status}",
    "was {status}",
    "Status - {status}",
    "state: {status}",
    "({status})",
    "is {status}",
)


ORDER_LABELS = {
    "order_id": ("Order", "Order ID", "Order no.", "Ref", "Reference", "ORDER", "Order #"),
    "customer": ("Customer", "Name", "Client", "Buyer", "Ship to", "CUSTOMER", "Bill to"),
    "quantity": ("Quantity", "Qty", "Items", "Units", "QTY", "Count"),
    "status": ("Status", "State", "STATUS", "Order status", "Shipping status"),
}


EVENT_LEAD = (
    "{title} takes place in {city} on {date}",
    "Join us on {date} in {city} for {title}",
    "{title} ({city}, {date})",
    "On {date}, {city} hosts {title}",
    "{title} comes to {city} on {date}",
    "Save the date: {title}, {date}, {city}",
    "{city} welcomes {title} on {date}",
    "{title} will be held in {city} on {date}",
    "Don't miss {title} in {city} ({date})",
    "{title} - {city} - {date}",
    "This year {title} is in {city}, starting {date}",
    "{title} returns to {city} on {date}",
    "Come to {title} on {date} at {city}",
    "{date}: {title} in {city}",
    "We are hosting {title} in {city} on {date}",
    "{title}, {city}, on {date}",
    "Mark {date} for {title}; venue in {city}",
)


EVENT_LABELS = {
    "title": ("Event", "Title", "What", "EVENT", "Name"),
    "date": ("Date", "When", "DATE", "Day", "On"),
    "city": ("City", "Where", "Venue city", "Location", "Place"),
}


LABEL_SEPS = (": ", ": ", ":  ", " - ", " = ", " — ", ":\t", " | ", " -> ", "- ")


FIELD_JOINS = ("\n", "\n", "; ", ", ", " | ", " / ", "\n\n", " · ", ". ")


class Grammar:
    """Compose texts for one family at a time; ``text(family)`` returns (text, values)."""

    def __init__(self, pools: Pools) -> None:
        self.p = pools
        self.r = pools.rng

    # ----------------------------------------------------------------- pieces
    def _noise_level(self) -> float:
        x = self.r.random()
        return 0.0 if x < 0.55 else (0.25 if x < 0.85 else 0.6)

    def _join_sentences(self, parts: list[str]) -> str:
        r = self.r
        out = ""
        for s in parts:
            s = s.strip().rstrip(",").rstrip()
            if not s:
                continue
            if s[-1] not in ".!?;)>\n":
                s += r.choice((".", ".", ".", "!", "", "."))
            if out:
                out += r.choice((" ", " ", " ", "  ", "\n", " "))
            out += s[:1].upper() + s[1:] if r.random() < 0.9 else s
        return out

    def _labeled(self, order: list[str], vals: dict[str, Any], labels: dict[str, tuple[str, ...]]) -> str:
        r = self.r
        sep = r.choice(LABEL_SEPS)
        join = r.choice(FIELD_JOINS)
        items = []
        for k in order:
            lab = r.choice(labels[k])
            if r.random() < 0.1:
                lab = lab.upper()
            items.append(f"{lab}{sep if r.random() < 0.9 else r.choice(LABEL_SEPS)}{vals[k]}")
        body = join.join(items)
        if r.random() < 0.3:
            body = (
                r.choice(("Profile", "Record", "Details", "Entry", "Info", "Form", "Card", "Data"))
                + (":\n" if "\n" in join else ": ")
                + body
            )
        return body

    def _bare_list(self, order: list[str], vals: dict[str, Any]) -> str:
        sep = self.r.choice((", ", "; ", " | ", " / ", "\n", " - ", "  ", "\t"))
        return sep.join(str(vals[k]) for k in order)

    def _style(self) -> str:
        x = self.r.random()
        return "prose" if x < 0.62 else ("labeled" if x < 0.85 else ("mixed" if x < 0.95 else "list"))

    # ----------------------------------------------------------------- distractors
    def _other_person(self) -> str:
        r, p = self.r, self.p
        first, last = p.first_last()
        nm = first if r.random() < 0.5 else f"{first} {last}"
        rel = r.choice(RELATIONS)
        pro = r.choice(("Her", "His", "Their", "My", "Our"))
        return r.choice(
            (
                f"{pro} {rel} {nm}, {r.randint(5, 95)}, lives in {p.city()}",
                f"{pro} {rel} {nm} is {r.randint(5, 95)}",
                f"{nm}, {pro.lower()} {rel}, moved to {p.city()}",
                f"{pro} {rel} ({nm}) works in {p.city()}",
                f"cc: {nm} <{p.email(first, last)}>",
                f"{pro} {rel} {nm} can be reached at {p.email(first, last)}",
                f"Referred by {nm}",
                f"{pro} {rel} is {r.randint(5, 95)} years old",
                f"Emergency contact: {nm}",
            )
        )

    def _numbers(self) -> str:
        r = self.r
        return r.choice(
            (
                f"Member ID {r.randint(1000, 99999)}",
                f"Room {r.randint(1, 450)}",
                f"Phone +{r.randint(1, 49)} {r.randint(100, 999)} {r.randint(1000, 9999)}",
                f"Ticket #{r.randint(100, 9999)}",
                f"{r.randint(2, 12)} kids and {r.randint(1, 4)} dogs",
                f"Joined in {r.randint(2000, 2024)}",
                f"{r.randint(2, 30)} years of experience",
                f"Floor {r.randint(1, 40)}",
                f"Score: {r.randint(1, 100)}",
                f"Ref {r.randint(10, 999)}-{r.randint(10, 99)}",
                f"Zip {r.randint(10000, 99999)}",
                f"Posted {r.randint(2, 59)} minutes ago",
                f"Page {r.randint(1, 20)} of {r.randint(20, 40)}",
            )
        )

    def _place(self) -> str:
        r, p = self.r, self.p
        return r.choice(
            (
                f"Previously in {p.city()}",
                f"Born in {p.city()}",
                f"Travels often to {p.city()}",
                f"The office is near {p.city()}",
                f"Next trip: {p.city()}",
                f"Studied in {p.city()}",
            )
        )

    def _distract(self, kinds: tuple[Any, ...], prob: float) -> list[str]:
        out = []
        while self.r.random() < prob and len(out) < 2:
            out.append(self.r.choice(kinds)())
            prob *= 0.4
        return out

    # ----------------------------------------------------------------- families
    def person(self) -> tuple[str, dict[str, Any]]:
        r, p = self.r, self.p
        name, first, last = p.person_name()
        v = {
            "name": name,
            "first": first,
            "age": r.randint(18, 95) if r.random() < 0.95 else r.randint(1, 17),
            "email": p.email(first, last),
            "city": p.city(),
        }
        lvl = self._noise_level()
        style = self._style()
        order = ["name", "age", "email", "city"]
        r.shuffle(order)
        if style == "labeled":
            if r.random() < 0.6:
                order.remove("name")
                order.insert(0, "name")
            text = self._labeled(order, v, PERSON_LABELS)
            extra = self._distract((self._other_person, self._numbers), 0.3)
            text = text + r.choice(("\n", " ", "\n\n")) + self._join_sentences(extra) if extra else text
        elif style == "list":
            text = self._bare_list(order, v)
        else:
            v["pron"] = r.choice(("She", "He", "They", first))
            lead = r.choice(PERSON_LEAD)
            city_c, email_c = r.choice(PERSON_CITY), r.choice(PERSON_EMAIL)
            k = r.random()
            if k < 0.35:
                sents = [f"{lead} and {city_c}", email_c]
            elif k < 0.55:
                sents = [f"{lead}", f"{{pron}} {city_c}", email_c]
            elif k < 0.7:
                sents = [email_c, f"{lead} and {city_c}"]
            elif k < 0.85:
                sents = [f"{lead}; {email_c}", f"{{pron}} {city_c}"]
            else:
                sents = [f"{{name}} {city_c}", f"{r.choice(('Age', 'age'))}: {{age}}", email_c]
            sents = [fill(s.replace(", and", " and").replace(",;", ";"), v, r, lvl) for s in sents]
            if style == "mixed":
                sents.append(self._labeled([order[-1]], v, PERSON_LABELS))
            extra = self._distract((self._other_person, self._numbers, self._place), 0.45)
            for e in extra:
                sents.insert(r.randint(1, len(sents)), e)
            if r.random() < 0.15:
                sents.insert(0, r.choice(("Hi all", "FYI", "New signup", "Quick intro", "Hello", "Update", "Note")))
            text = self._join_sentences(sents)
        return text, {k: v[k] for k in ("name", "age", "email", "city")}

    def company(self) -> tuple[str, dict[str, Any]]:
        r, p = self.r, self.p
        v = {
            "name": p.company(),
            "founded": r.randint(1850, 2024),
            "employees": r.choice((r.randint(2, 99), r.randint(100, 9999), r.randint(10000, 250000))),
            "city": p.city(),
        }
        lvl = self._noise_level()
        style = self._style()
        order = ["name", "founded", "employees", "city"]
        r.shuffle(order)
        if style == "labeled":
            text = self._labeled(order, v, COMPANY_LABELS)
        elif style == "list":
            text = self._bare_list(order, v)
        else:
            lead, cc, ec = r.choice(COMPANY_LEAD), r.choice(COMPANY_CITY), r.choice(COMPANY_EMP)
            pron = r.choice(("It", "The company", "The firm", "Today it", "{name}"))
            k = r.random()
            if k < 0.3:
                sents = [f"{lead} and {cc}", f"{pron} {ec}"]
            elif k < 0.55:
                sents = [lead, f"{pron} {cc} and {ec}"]
            elif k < 0.75:
                sents = [
                    f"{{name}} {cc}",
                    f"{pron} {ec}",
                    lead.replace("{name}", "it") if "{name}" in lead[:7] else "Founded {founded}",
                ]
            else:
                sents = [
                    f"{lead}; {pron.lower() if pron != '{name}' else pron} {ec}",
                    f"{r.choice(('HQ', 'Head office', 'Location'))}: {{city}}",
                ]
            sents = [fill(s, v, r, lvl) for s in sents]
            if style == "mixed":
                sents.append(self._labeled([order[0]], v, COMPANY_LABELS))
            first, last = p.first_last()
            extra = self._distract(
                (
                    lambda: f"CEO {first} {last} joined in {r.randint(1990, 2024)}",
                    lambda: f"Revenue reached {r.randint(2, 900)} million in {r.randint(2015, 2024)}",
                    lambda: f"In {r.randint(1990, 2024)} it opened an office in {p.city()}",
                    lambda: f"Its rival {p.company()} has {r.randint(10, 5000)} staff",
                    self._numbers,
                ),
                0.45,
            )
            for e in extra:
                sents.insert(r.randint(1, len(sents)), e)
            text = self._join_sentences(sents)
        return text, {k: v[k] for k in ("name", "founded", "employees", "city")}

    def product(self) -> tuple[str, dict[str, Any]]:
        r, p = self.r, self.p
        cat = r.choice(CATEGORIES)
        name = p.product()
        whole = r.randint(1, 999) if r.random() < 0.8 else r.randint(1000, 4999)
        cents = r.choice((r.randint(0, 99), 99, 0, 50, 95))
        v = {
            "name": name,
            "price": f"{whole}.{cents:02d}",
            "category": cat,
            "cat": r.choice(CAT_WORDS[cat]),
        }
        lvl = self._noise_level()
        style = self._style()
        order = ["name", "price", "category"]
        r.shuffle(order)
        if style == "labeled":
            text = self._labeled(order, {**v, "category": v["cat"]}, PRODUCT_LABELS)
        elif style == "list":
            text = self._bare_list(order, {**v, "category": v["cat"]})
        else:
            lead, cc = r.choice(PRODUCT_LEAD), r.choice(PRODUCT_CAT)
            k = r.random()
            if k < 0.4:
                sents = [f"{lead}, {cc}"]
            elif k < 0.65:
                sents = [
                    lead,
                    (
                        f"It is {cc}"
                        if cc.split()[0] in ("listed", "in", "part", "a", "from", "shelved", "filed", "under")
                        else cc[:1].upper() + cc[1:]
                    )
                    if not cc.startswith("(")
                    else "Category {cat}",
                ]
            elif k < 0.85:
                sents = ["New in {cat}", lead]
            else:
                sents = [f"{r.choice(('Category', 'Dept', 'Section'))}: {{cat}}", lead]
            sents = [fill(s, v, r, lvl) for s in sents]
            extra = self._distract(
                (
                    lambda: f"Was {r.randint(1, 999)}.{r.randint(0, 99):02d} last week",
                    lambda: f"Free shipping over {r.randint(20, 99)} dollars",
                    lambda: f"{r.randint(2, 500)} left in stock",
                    lambda: f"Rated {r.randint(1, 4)}.{r.randint(0, 9)} by {r.randint(10, 9000)} buyers",
                    lambda: f"SKU {r.randint(10000, 999999)}",
                    lambda: f"Ships in {r.randint(1, 14)} days",
                ),
                0.45,
            )
            for e in extra:
                sents.insert(r.randint(1, len(sents)), e)
            text = self._join_sentences(sents)
        return text, {"name": v["name"], "price": v["price"], "category": v["category"]}

    def order(self) -> tuple[str, dict[str, Any]]:
        r, p = self.r, self.p
        name, _, _ = p.person_name()
        v = {
            "order_id": f"ORD-{r.randint(0, 999999):06d}",
            "customer": name,
            "quantity": r.randint(1, 99),
            "status": r.choice(STATUSES),
        }
        lvl = self._noise_level()
        style = self._style()
        order = ["order_id", "customer", "quantity", "status"]
        r.shuffle(order)
        if style == "labeled":
            text = self._labeled(order, v, ORDER_LABELS)
        elif style == "list":
            text = self._bare_list(order, v)
        else:
            lead, qc, sc = r.choice(ORDER_LEAD), r.choice(ORDER_QTY), r.choice(ORDER_STATUS)
            k = r.random()
            if k < 0.35:
                sents = [f"{lead}: {qc}, {sc}"]
            elif k < 0.6:
                sents = [
                    f"{lead} {r.choice(('has', 'with', 'of', 'for'))} {qc}" if qc.startswith("{") else f"{lead} {qc}",
                    (f"It {sc}" if sc.split()[0] in ("is", "has", "was") else sc[:1].upper() + sc[1:])
                    if not sc.startswith("(")
                    else "Status {status}",
                ]
            elif k < 0.8:
                sents = [f"{r.choice(('Status', 'Update', 'Shipping update'))}: {{status}}", f"{lead}, {qc}"]
            else:
                sents = [
                    lead,
                    f"{r.choice(('Qty', 'Quantity', 'Items'))}: {{quantity}}",
                    f"{r.choice(('Status', 'State'))}: {{status}}",
                ]
            sents = [fill(s, v, r, lvl) for s in sents]
            extra = self._distract(
                (
                    lambda: f"Tracking number {r.randint(10**8, 10**10)}",
                    lambda: f"Total ${r.randint(5, 900)}.{r.randint(0, 99):02d}",
                    lambda: f"Previous order ORD-{r.randint(0, 999999):06d} was {r.choice(STATUSES)}",
                    lambda: f"Handled by {p.first_last()[0]}",
                    lambda: f"Delivery in {r.randint(2, 9)} days",
                    lambda: f"Support ticket {r.randint(100, 99999)}",
                ),
                0.45,
            )
            for e in extra:
                sents.insert(r.randint(1, len(sents)), e)
            text = self._join_sentences(sents)
        return text, {k: v[k] for k in ("order_id", "customer", "quantity", "status")}

    def event(self) -> tuple[str, dict[str, Any]]:
        r, p = self.r, self.p
        v = {"title": p.event_title(), "date": p.date(), "city": p.city()}
        lvl = self._noise_level()
        style = self._style()
        order = ["title", "date", "city"]
        r.shuffle(order)
        if style == "labeled":
            text = self._labeled(order, v, EVENT_LABELS)
        elif style == "list":
            text = self._bare_list(order, v)
        else:
            sents = [fill(r.choice(EVENT_LEAD), v, r, lvl)]
            extra = self._distract(
                (
                    lambda: f"Tickets from {r.randint(5, 300)} euros",
                    lambda: f"Registration closes {p.date()}",
                    lambda: f"Last year it was in {p.city()}",
                    lambda: f"Over {r.randint(100, 20000)} visitors expected",
                    lambda: f"Doors open at {r.randint(8, 20)}:00",
                    lambda: f"Speakers include {' '.join(p.first_last())}",
                ),
                0.5,
            )
            for e in extra:
                sents.insert(r.randint(0, len(sents)), e)
            if style == "mixed":
                sents.append(self._labeled([order[0]], v, EVENT_LABELS))
            text = self._join_sentences(sents)
        return text, dict(v)

    def text(self, family: str) -> tuple[str, dict[str, Any]]:
        return getattr(self, family)()


def make_corpus_records(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` records of the read-and-copy grammar: {"family", "text", "values"}, reproducible."""
    pools = Pools(seed)
    g = Grammar(pools)
    families = list(FAMILIES)
    out = []
    for _ in range(n):
        fam = pools.rng.choice(families)
        text, values = g.text(fam)
        out.append({"family": fam, "text": text, "values": values})
    return out


def copy_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """(prefix, span): ``prefix`` holds a text with the span in it, the model writes the span."""
    pools = Pools(seed + 7)
    r = pools.rng
    out = []
    for _ in range(n):
        kind = r.random()
        if kind < 0.3:
            span = pools.person_name()[0]
        elif kind < 0.5:
            span = pools.city()
        elif kind < 0.65:
            span = pools.email(*pools.first_last())
        elif kind < 0.8:
            span = " ".join(pools.invented() for _ in range(r.randint(1, 3)))
        else:
            span = pools.company()
        before = " ".join(pools.invented().lower() for _ in range(r.randint(0, 4)))
        after = " ".join(pools.invented().lower() for _ in range(r.randint(0, 4)))
        text = " ".join(x for x in (before, span, after) if x)
        cue = r.choice(("Copy", "Repeat", "Span", "Echo", "Value"))
        out.append((f"Text: {text}\n{cue}: ", span))
    return out


_ATTRS = (
    "value",
    "x",
    "y",
    "z",
    "amount",
    "count",
    "total",
    "size",
    "price",
    "width",
    "height",
    "score",
    "weight",
    "length",
    "balance",
    "items",
    "name",
    "key",
    "start",
    "end",
    "age",
    "level",
    "rank",
    "cost",
    "speed",
    "area",
    "radius",
    "data",
    "priority",
    "quantity",
    "version",
    "index",
    "id",
)


_METHOD_OPS = (
    (("add", "plus", "__add__", "combine", "sum_with", "add_{a}", "merge"), "+"),
    (("sub", "subtract", "minus", "__sub__", "difference", "diff_{a}"), "-"),
    (("mul", "multiply", "times", "__mul__", "scale_by", "product"), "*"),
    (("div", "divide", "__truediv__", "ratio", "ratio_of_{a}"), "/"),
    (("eq", "__eq__", "equals", "is_equal", "same_{a}", "has_same_{a}", "matches"), "=="),
    (("lt", "__lt__", "less_than", "is_smaller", "before", "smaller_{a}"), "<"),
    (("le", "__le__", "at_most"), "<="),
    (("gt", "__gt__", "greater_than", "is_larger", "after", "larger_{a}", "bigger_than"), ">"),
    (("ge", "__ge__", "at_least"), ">="),
)


def method_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """(name, expr) of small binary methods whose name matches the body: ("add", "self.value + other.value")."""
    r = random.Random(seed + 11)
    out = []
    for _ in range(n):
        names, op = r.choice(_METHOD_OPS)
        a = r.choice(_ATTRS)
        name = r.choice(names).replace("{a}", a)
        x = r.random()
        if x < 0.75:
            expr = f"self.{a} {op} other.{a}"
        elif x < 0.85:
            expr = f"self {op} other"
        elif x < 0.93 and op in "+-*/":
            expr = f"other.{a} {op} self.{a}"
        else:
            expr = (
                f"self.{a} {op} other.{r.choice(_ATTRS)}" if op in ("+", "-", "*", "/") else f"self.{a} {op} other.{a}"
            )
        out.append((name, expr))
    return out


def method_source(name: str, expr: str, r: random.Random) -> str:
    """The method as source, sometimes inside a small class."""
    body = f"def {name}(self, other):\n    return {expr}\n"
    if r.random() < 0.5:
        return body
    cls = r.choice(("Vector", "Money", "Point", "Box", "Item", "Node", "Account", "Score", "Version", "Size"))
    attrs = sorted({m for m in re.findall(r"\.(\w+)", expr)} or {"value"})
    init = "\n".join(f"        self.{a} = {a}" for a in attrs)
    meth = "\n".join("    " + line for line in body.splitlines())
    return f"class {cls}:\n    def __init__(self, {', '.join(attrs)}):\n{init}\n\n{meth}\n"


def demo_code_prompt() -> Any:
    """The demo's code example (unchanged layout): a method's name and ``return`` expression as slots."""
    from dlmprompt.spec import Prompt, slot

    return (
        Prompt("def ")
        + slot("name", regex=r"[a-z_][a-z0-9_]*", max_tokens=4)
        + "(self, other):\n    return "
        + slot("expr", regex=r"[a-z_][a-z0-9_.]*( [-+*/<>=]+ [a-z_][a-z0-9_.]*)?", max_tokens=8)
        + "\n"
    )
