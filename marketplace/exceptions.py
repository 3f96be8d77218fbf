class CatalogueError(Exception):
    """Base for catalogue rule violations; carries a message for a person."""


class AllocationExceeded(CatalogueError):
    def __init__(self, *, lander_capacity_g: int, allocated_g: int) -> None:
        self.lander_capacity_g = lander_capacity_g
        self.allocated_g = allocated_g
        super().__init__(
            f"The slot classes would allocate {allocated_g} g, more than the lander's "
            f"{lander_capacity_g} g."
        )
