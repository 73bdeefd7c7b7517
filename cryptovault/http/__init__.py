"""GraphQL over HTTP: Strawberry's ASGI view with the app's protections."""
