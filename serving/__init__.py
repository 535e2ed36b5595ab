"""Everything that speaks TF Serving: the model server, its client and shared config builders."""
