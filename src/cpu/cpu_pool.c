/* A persistent thread pool: workers wait for a generation counter to move,
 * run their slice of the task, and report back. Workers spin briefly before
 * sleeping on a condition variable so back-to-back forwards (one per layer)
 * do not pay a futex wake-up each, while an idle pool costs no CPU.
 *
 * Concurrency: cpu_pool_run holds `dispatch` for the whole task. A second
 * caller does not wait for it (trylock fails): it runs its task alone on its
 * own thread, so two forwards on one context are both correct and neither
 * blocks the other. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cpu_internal.h"

/* Spin iterations before a worker or the caller sleeps (~tens of us). */
#define CPU_POOL_SPIN 20000

struct cpu_pool {
  int size; /* threads including the caller */
  pthread_t *workers;
  pthread_mutex_t dispatch; /* one task at a time */
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_cond_t done;
  atomic_uint_fast64_t generation; /* bumped per task */
  atomic_int remaining;            /* workers still inside the current task */
  cpu_task_fn fn;
  void *arg;
  int task_threads;
  bool stop;
};

typedef struct worker_start {
  cpu_pool *pool;
  int index;
} worker_start;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __asm__ __volatile__("pause");
#endif
}

static void *worker_main(void *opaque) {
  worker_start start = *(worker_start *)opaque;
  free(opaque);
  cpu_pool *pool = start.pool;
  uint_fast64_t seen = 0;
  for (;;) {
    /* Wait for a new generation: spin, then sleep. */
    int spins = 0;
    while (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen &&
           spins < CPU_POOL_SPIN) {
      cpu_relax();
      spins++;
    }
    pthread_mutex_lock(&pool->lock);
    while (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen && !pool->stop)
      pthread_cond_wait(&pool->wake, &pool->lock);
    if (pool->stop) {
      pthread_mutex_unlock(&pool->lock);
      return NULL;
    }
    seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
    cpu_task_fn fn = pool->fn;
    void *arg = pool->arg;
    const int threads = pool->task_threads;
    pthread_mutex_unlock(&pool->lock);

    if (start.index < threads) {
      fn(arg, start.index, threads);
      if (atomic_fetch_sub_explicit(&pool->remaining, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_lock(&pool->lock);
        pthread_cond_signal(&pool->done);
        pthread_mutex_unlock(&pool->lock);
      }
    }
  }
}

fp8gemm_status cpu_pool_create(int thread_count, cpu_pool **out) {
  *out = NULL;
  if (thread_count < 1) thread_count = 1;
  cpu_pool *pool = calloc(1, sizeof *pool);
  if (!pool) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "cpu backend: thread pool");
  pool->size = thread_count;
  pthread_mutex_init(&pool->dispatch, NULL);
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->wake, NULL);
  pthread_cond_init(&pool->done, NULL);
  atomic_init(&pool->generation, 0);
  atomic_init(&pool->remaining, 0);
  if (thread_count > 1) {
    pool->workers = calloc((size_t)thread_count - 1, sizeof *pool->workers);
    if (!pool->workers) {
      cpu_pool_destroy(pool);
      return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "cpu backend: thread pool");
    }
    for (int i = 1; i < thread_count; i++) {
      worker_start *start = malloc(sizeof *start);
      int rc = start ? 0 : -1;
      if (start) {
        start->pool = pool;
        start->index = i;
        rc = pthread_create(&pool->workers[i - 1], NULL, worker_main, start);
        if (rc != 0) free(start);
      }
      if (rc != 0) {
        pool->size = i; /* the workers started so far are joined by destroy */
        cpu_pool_destroy(pool);
        return fp8gemm_set_error(FP8GEMM_ERROR_BACKEND,
                                 "cpu backend: could not start worker thread %d of %d", i,
                                 thread_count);
      }
    }
  }
  *out = pool;
  return FP8GEMM_OK;
}

void cpu_pool_destroy(cpu_pool *pool) {
  if (!pool) return;
  pthread_mutex_lock(&pool->lock);
  pool->stop = true;
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->lock);
  for (int i = 1; i < pool->size; i++) pthread_join(pool->workers[i - 1], NULL);
  free(pool->workers);
  pthread_cond_destroy(&pool->wake);
  pthread_cond_destroy(&pool->done);
  pthread_mutex_destroy(&pool->lock);
  pthread_mutex_destroy(&pool->dispatch);
  free(pool);
}

int cpu_pool_size(const cpu_pool *pool) { return pool->size; }

void cpu_pool_run(cpu_pool *pool, int want_threads, cpu_task_fn fn, void *arg) {
  int threads = want_threads < pool->size ? want_threads : pool->size;
  if (threads <= 1 || pthread_mutex_trylock(&pool->dispatch) != 0) {
    fn(arg, 0, 1);
    return;
  }
  pthread_mutex_lock(&pool->lock);
  pool->fn = fn;
  pool->arg = arg;
  pool->task_threads = threads;
  atomic_store_explicit(&pool->remaining, threads - 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->lock);

  fn(arg, 0, threads);

  int spins = 0;
  while (atomic_load_explicit(&pool->remaining, memory_order_acquire) != 0 &&
         spins < CPU_POOL_SPIN) {
    cpu_relax();
    spins++;
  }
  pthread_mutex_lock(&pool->lock);
  while (atomic_load_explicit(&pool->remaining, memory_order_acquire) != 0)
    pthread_cond_wait(&pool->done, &pool->lock);
  pthread_mutex_unlock(&pool->lock);
  pthread_mutex_unlock(&pool->dispatch);
}
