"""The product catalogue: rates, limits and fees, loaded from one data file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from core.errors import CatalogueError

PRODUCT_IDS = ("home", "personal", "car", "business", "education")


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    keywords: tuple[str, ...]
    annual_rate: Decimal
    min_amount: int
    max_amount: int
    min_tenure_months: int
    max_tenure_months: int
    processing_fee_percent: Decimal
    processing_fee_cap: int
    min_monthly_income: int
    min_age: int
    max_age_at_maturity: int
    part_prepayment_charge_percent: Decimal
    foreclosure_charge_percent: Decimal
    min_emis_before_foreclosure: int

    def processing_fee(self, amount: Decimal | int) -> Decimal:
        fee = Decimal(amount) * self.processing_fee_percent / 100
        return min(fee, Decimal(self.processing_fee_cap)).quantize(Decimal(1))


@dataclass(frozen=True)
class Catalogue:
    currency: str
    max_emi_to_income: Decimal
    products: dict[str, Product]

    def get(self, product_id: str) -> Product:
        try:
            return self.products[product_id]
        except KeyError:
            known = ", ".join(self.products)
            raise CatalogueError(f"unknown product {product_id!r}; known: {known}") from None


def _product(pid: str, raw: dict[str, Any]) -> Product:
    try:
        product = Product(
            id=pid,
            name=str(raw["name"]),
            keywords=tuple(str(k).lower() for k in raw.get("keywords", [])),
            annual_rate=Decimal(str(raw["annual_rate"])),
            min_amount=int(raw["min_amount"]),
            max_amount=int(raw["max_amount"]),
            min_tenure_months=int(raw["min_tenure_months"]),
            max_tenure_months=int(raw["max_tenure_months"]),
            processing_fee_percent=Decimal(str(raw["processing_fee_percent"])),
            processing_fee_cap=int(raw["processing_fee_cap"]),
            min_monthly_income=int(raw["min_monthly_income"]),
            min_age=int(raw["min_age"]),
            max_age_at_maturity=int(raw["max_age_at_maturity"]),
            part_prepayment_charge_percent=Decimal(str(raw["part_prepayment_charge_percent"])),
            foreclosure_charge_percent=Decimal(str(raw["foreclosure_charge_percent"])),
            min_emis_before_foreclosure=int(raw["min_emis_before_foreclosure"]),
        )
    except (KeyError, ValueError, ArithmeticError) as exc:
        raise CatalogueError(f"product {pid!r} is incomplete or invalid: {exc}") from exc
    if not 0 < product.min_amount <= product.max_amount:
        raise CatalogueError(f"product {pid!r}: amount limits are inconsistent")
    if not 0 < product.min_tenure_months <= product.max_tenure_months:
        raise CatalogueError(f"product {pid!r}: tenure limits are inconsistent")
    return product


def parse_catalogue(text: str) -> Catalogue:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"catalogue is not valid TOML: {exc}") from exc
    products = {pid: _product(pid, raw) for pid, raw in data.get("products", {}).items()}
    if not products:
        raise CatalogueError("catalogue lists no products")
    return Catalogue(
        currency=str(data.get("currency", "INR")),
        max_emi_to_income=Decimal(str(data.get("max_emi_to_income", "0.5"))),
        products=products,
    )


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load the catalogue from ``path`` or the copy bundled with the package."""
    if path is None:
        text = resources.files("core").joinpath("data/products.toml").read_text("utf-8")
    else:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise CatalogueError(f"cannot read catalogue {path}: {exc}") from exc
    return parse_catalogue(text)
