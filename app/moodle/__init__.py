"""Moodle web-service client, its error tree and Moodle's wire formats."""
