"""The `qt` command: settings, local stack launcher, demo."""
