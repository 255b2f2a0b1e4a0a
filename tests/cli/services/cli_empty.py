"""Defines no service at all."""

VALUE = 1
