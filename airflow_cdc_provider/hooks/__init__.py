"""Change-feed hooks: one module per source, each over the official provider hook."""
