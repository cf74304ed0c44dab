"""kubellm gateway: the data plane."""
