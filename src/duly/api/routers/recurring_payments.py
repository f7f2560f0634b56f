"""Placeholder: filled in with the resource's routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
