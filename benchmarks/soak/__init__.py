"""The soak: mixed traffic against one server for minutes, its figures per interval and a verdict."""
