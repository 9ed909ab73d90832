"""Placeholder replaced below."""

RECIPES = {}
