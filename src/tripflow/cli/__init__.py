"""tripflow.cli"""

from tripflow.memory import use_malloc_for_arrow

use_malloc_for_arrow()  # before anything loads pyarrow (see tripflow.memory)
