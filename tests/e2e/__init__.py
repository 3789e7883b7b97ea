"""End-to-end suite: the real `beatbus` commands together, checked from outside (marker ``e2e``)."""
