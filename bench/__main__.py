from bench import limiter

if __name__ == "__main__":
    limiter.main()
