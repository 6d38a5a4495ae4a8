"""What compress writes and recommends: report.json/.md/.html (`render`), plots, deployment targets, suite results and
the output folder."""
