"""Mission control's widgets."""
