"""Mission control's screens: lane detail, confirmations and help."""
