"""Kong: fleet-wide functional smoke tests for Django sites, written in twill."""

__version__ = "2.0.0"
