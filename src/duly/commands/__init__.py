"""Groups of ``duly`` sub-commands, one module each; ``duly.cli`` registers them."""
