"""`accelerate launch` fine-tuning and evaluation recipes, metrics and the `minerva-fm` CLI."""
