"""Formatting money the way the customer's currency expects."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

SYMBOLS = {"INR": "₹", "USD": "$", "EUR": "€", "GBP": "£", "AED": "AED "}


def group_indian(whole: int) -> str:
    """25,00,000 style grouping: the last three digits, then pairs."""
    digits = str(abs(whole))
    if len(digits) <= 3:
        grouped = digits
    else:
        head, tail = digits[:-3], digits[-3:]
        pairs: list[str] = []
        while len(head) > 2:
            pairs.insert(0, head[-2:])
            head = head[:-2]
        if head:
            pairs.insert(0, head)
        grouped = ",".join([*pairs, tail])
    return ("-" if whole < 0 else "") + grouped


def format_money(amount: Decimal | int, currency: str = "INR", paise: bool = False) -> str:
    """``format_money(2500000)`` -> ``₹25,00,000``; rounded to the rupee unless ``paise``."""
    value = Decimal(amount)
    quantum = Decimal("0.01") if paise else Decimal(1)
    value = value.quantize(quantum, ROUND_HALF_UP)
    whole = int(value)
    grouped = group_indian(whole) if currency == "INR" else f"{whole:,}"
    if paise:
        grouped += "." + f"{abs(value):.2f}".split(".")[1]
    symbol = SYMBOLS.get(currency, currency + " ")
    return f"{symbol}{grouped}"


def format_amount_words(amount: Decimal | int) -> str:
    """A short spoken form customers use: 25 lakh, 1.2 crore."""
    value = Decimal(amount)
    for size, word in ((Decimal(10_000_000), "crore"), (Decimal(100_000), "lakh")):
        if value >= size:
            return f"{(value / size).normalize():f} {word}"
    return f"{int(value):,}"
