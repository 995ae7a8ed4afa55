FROM busybox
COPY app/ /app/
CMD ["cat", "/app/app.txt"]
