"""What the report and the drift stage draw and write: paper-shaped tables, verdicts, figures."""
