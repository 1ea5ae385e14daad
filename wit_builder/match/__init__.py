"""match: alt texts against the query list (MetaCLIP substring rules), entry ids per row."""
