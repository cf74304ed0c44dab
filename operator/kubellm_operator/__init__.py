"""kubellm's control plane: a kopf operator that validates kubellm resources, writes their
conditions, mints API keys and posts Events. It never serves traffic."""
