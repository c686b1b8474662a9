"""A real demessaging backend module with two functions, used by the end-to-end tests."""

from demessaging import main

__all__ = ["hello_world", "add"]


def hello_world() -> str:
    """Say hello."""
    return "Hello World!"


def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b


if __name__ == "__main__":
    main()
