"""Experimental APIs, under Ray's names (``ray.experimental``)."""
