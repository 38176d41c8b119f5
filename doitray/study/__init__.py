"""Studies: the study file (``spec``), the grid and cell identity (``cells``), the strategy table
(``stages``), what is prepared once per study (``prepare``), the dry run (``plan``), one cell as a Tune
trial (``cell``), the Tune runner (``runner``) and progress from storage (``progress``)."""
