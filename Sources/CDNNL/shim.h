#include <oneapi/dnnl/dnnl.h>

/* oneDNN's CPU runtime is OpenMP (Debian's libdnnl); the thread count of the parallel
   regions a calling thread starts is that thread's own setting. */
void omp_set_num_threads(int count);
