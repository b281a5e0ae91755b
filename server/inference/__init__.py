"""`fedrp serve`: what a federation trained, answered over HTTP, many tasks on one backbone (fedrp.serving)."""
