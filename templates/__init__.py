"""The shipped Jinja2 templates: chat templates (``chat_*.jinja``) and prompt templates.

This folder sits at the top of the repository and installs as the data package
``dlmprompt.templates`` (see ``pyproject.toml``); code finds the files through
``importlib.resources.files("dlmprompt.templates")``, in editable and wheel installs alike.
"""
