"""What the tests share besides fixtures (those are in conftest.py): paths, processes, peers."""
