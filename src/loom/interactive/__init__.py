"""Interactive tasks: turn any task into a live VS Code or Jupyter session.

Public names are added here as the pieces land.
"""

__all__: list[str] = []
