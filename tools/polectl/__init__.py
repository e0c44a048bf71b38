"""polectl: the installer's command line for smartpole poles."""
