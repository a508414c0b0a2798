"""One module per Stripe resource; importing a module registers its routes."""
