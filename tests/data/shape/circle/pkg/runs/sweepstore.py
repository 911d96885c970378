class SweepStore:
    def runs(self):
        from pkg.runs.store import SweepStore as again  # absolute form, in a function body
        return again
