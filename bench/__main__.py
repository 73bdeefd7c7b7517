from bench import alerts, limiter

if __name__ == "__main__":
    alerts.main([])
    limiter.main()
