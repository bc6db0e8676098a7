def tenancy(request):
    actor = getattr(request, "actor", None)
    if actor is None:
        return {}
    return {"actor": actor}
