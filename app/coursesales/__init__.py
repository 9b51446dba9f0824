"""CourseSales web-API client: JSON-in-query requests, column-indexed answers, typed errors."""
