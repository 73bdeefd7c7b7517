"""Protecting the API: cost budgets, login/register limits, connection caps and
persisted queries. Plain Python, no GraphQL or HTTP here."""
